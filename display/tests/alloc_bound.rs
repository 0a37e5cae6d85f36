//! A client's length fields never turn into allocations: a 4 GiB ClientCutText claim
//! (and a 2 GiB extended one) is read through in bounded chunks. A counting global
//! allocator records the largest single allocation the parser makes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

use display::rfb::protocol::{ClientMessage, Limits, read_client_message};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for realloc's own contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A header, then `body` bytes of filler generated on the fly (never held in memory).
struct Claim {
    header: Vec<u8>,
    pos: usize,
    body: u64,
}

impl Read for Claim {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos < self.header.len() {
            let n = buf.len().min(self.header.len() - self.pos);
            buf[..n].copy_from_slice(&self.header[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        let n = (buf.len() as u64).min(self.body) as usize;
        buf[..n].fill(b'x');
        self.body -= n as u64;
        Ok(n)
    }
}

#[test]
fn four_gib_cut_text_claim_does_not_allocate() {
    let limits = Limits::default();
    // Plain ClientCutText claiming 0xFFFF_FFFE bytes; only 64 MiB actually follow before
    // the "client" hangs up. The parser must read them through a small buffer and fail
    // with EOF, never reserving the claimed size.
    LARGEST.store(0, Ordering::Relaxed);
    let mut r = Claim {
        header: vec![6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xfe],
        pos: 0,
        body: 64 << 20,
    };
    assert!(read_client_message(&mut r, &limits).is_err());
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < 1 << 20, "largest allocation {largest} bytes");

    // The same through the extended-clipboard form (negative length).
    LARGEST.store(0, Ordering::Relaxed);
    let mut r = Claim {
        header: vec![6, 0, 0, 0, 0x80, 0, 0, 1],
        pos: 0,
        body: 64 << 20,
    };
    assert!(read_client_message(&mut r, &limits).is_err());
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(largest < 1 << 20, "largest allocation {largest} bytes");

    // A claim just over the limit that is fully sent is skipped and the stream goes on.
    let over = limits.max_cut_text as u64 + 1;
    let mut header = vec![6, 0, 0, 0];
    header.extend_from_slice(&(over as u32).to_be_bytes());
    let mut r = Claim {
        header,
        pos: 0,
        body: over,
    };
    assert_eq!(
        read_client_message(&mut r, &limits).unwrap(),
        ClientMessage::CutTextTooLong(over)
    );
}
