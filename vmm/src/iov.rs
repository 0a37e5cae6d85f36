//! One system call moves a request's bytes between a file or socket and the guest's own
//! buffers: the buffers become `iovec`s for `preadv`/`pwritev`/`writev`, and
//! [`transfer_all`] repeats the call over what is left after a short transfer.

use std::io;

use crate::disk::GuestSlice;

/// The most buffers one call takes (Linux's UIO_MAXIOV).
pub const IOV_MAX: usize = 1024;

/// The iovec of a guest slice. The slice's pointer guard must be held while the kernel
/// may use it (for plain mmap'd guest RAM the guard only carries the pointer).
pub fn guest_iovec(guard: &vm_memory::volatile_memory::PtrGuardMut) -> libc::iovec {
    libc::iovec {
        iov_base: guard.as_ptr().cast(),
        iov_len: guard.len(),
    }
}

/// The iovec of bytes the kernel only reads (a header a VMM writes before guest data).
pub fn bytes_iovec(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    }
}

/// Guards for `bufs`, to hold while their iovecs are in use.
pub fn guards(bufs: &[GuestSlice<'_>]) -> Vec<vm_memory::volatile_memory::PtrGuardMut> {
    bufs.iter().map(|b| b.ptr_guard_mut()).collect()
}

/// What a `readv`/`writev`-like call returned: the bytes moved, or the error in errno.
pub fn syscall_result(r: isize) -> io::Result<usize> {
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Calls `op` over the iovecs not yet moved (at most [`IOV_MAX`] at a time) until every
/// byte of `iov` has moved. `op` returns the bytes it moved (an interrupted call is
/// retried). A call that moves nothing is an error of kind `zero` (a file that shrank, a
/// peer that stopped taking bytes).
pub fn transfer_all(
    iov: &mut [libc::iovec],
    zero: io::ErrorKind,
    mut op: impl FnMut(&[libc::iovec]) -> io::Result<usize>,
) -> io::Result<()> {
    let mut first = 0;
    while first < iov.len() {
        if iov[first].iov_len == 0 {
            first += 1;
            continue;
        }
        let mut done = match op(&iov[first..iov.len().min(first + IOV_MAX)]) {
            Ok(0) => return Err(io::Error::from(zero)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while done > 0 && first < iov.len() {
            let v = &mut iov[first];
            if v.iov_len <= done {
                done -= v.iov_len;
                first += 1;
            } else {
                // Within the same buffer, by less than its length.
                v.iov_base = v.iov_base.cast::<u8>().wrapping_add(done).cast();
                v.iov_len -= done;
                done = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short transfers resume where they stopped, across and inside buffers; empty
    /// buffers are skipped; EINTR is retried; a call moving nothing is the given error.
    #[test]
    fn short_transfers_resume_and_nothing_moved_is_an_error() {
        let a = b"0123".to_vec();
        let b = b"".to_vec();
        let c = b"456789".to_vec();
        let mut iov = [bytes_iovec(&a), bytes_iovec(&b), bytes_iovec(&c)];
        let mut got = Vec::new();
        let mut steps = [Some(3), None, Some(2), Some(5)].into_iter();
        transfer_all(&mut iov, io::ErrorKind::WriteZero, |v| {
            let Some(n) = steps.next().unwrap() else {
                return Err(io::ErrorKind::Interrupted.into());
            };
            let mut left = n;
            for x in v {
                let take = x.iov_len.min(left);
                // SAFETY: the iovec points into `a` or `c` (alive here) with that length.
                let s = unsafe { std::slice::from_raw_parts(x.iov_base.cast::<u8>(), take) };
                got.extend_from_slice(s);
                left -= take;
            }
            Ok(n)
        })
        .unwrap();
        assert_eq!(got, b"0123456789");
        assert_eq!(steps.next(), None, "every step used");

        let mut iov = [bytes_iovec(&a)];
        let e = transfer_all(&mut iov, io::ErrorKind::WriteZero, |_| Ok(0)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }

    /// More buffers than one call takes go in several calls.
    #[test]
    fn more_than_iov_max_buffers_take_several_calls() {
        let bytes = vec![1u8; IOV_MAX + 5];
        let mut iov: Vec<libc::iovec> = bytes.chunks(1).map(bytes_iovec).collect();
        let mut calls = Vec::new();
        transfer_all(&mut iov, io::ErrorKind::WriteZero, |v| {
            calls.push(v.len());
            Ok(v.len())
        })
        .unwrap();
        assert_eq!(calls, [IOV_MAX, 5]);
    }
}
