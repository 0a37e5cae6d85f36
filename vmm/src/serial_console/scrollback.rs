//! The last bytes COM1 sent, kept so a viewer that connects late sees what is on the
//! guest's console (a login prompt printed minutes ago) before the live output.

use std::collections::VecDeque;

/// How far into a wrapped scrollback a line break is looked for: past this the replay
/// starts mid-line rather than lose more.
const LINE_SEARCH: usize = 4096;

/// A bounded ring of bytes: pushing past the capacity forgets the oldest.
#[derive(Debug)]
pub struct Scrollback {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Bytes were forgotten: the oldest kept byte may be in the middle of a line or of an
    /// escape sequence.
    wrapped: bool,
}

impl Scrollback {
    pub fn new(capacity: usize) -> Scrollback {
        Scrollback {
            bytes: VecDeque::with_capacity(capacity),
            capacity,
            wrapped: false,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.capacity == 0 {
            self.wrapped |= !data.is_empty();
            return;
        }
        let data = if data.len() > self.capacity {
            self.wrapped = true;
            &data[data.len() - self.capacity..]
        } else {
            data
        };
        let excess = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        if excess > 0 {
            self.wrapped = true;
            self.bytes.drain(..excess);
        }
        self.bytes.extend(data);
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What a new viewer is sent first: everything kept, or, once the ring has wrapped,
    /// from the first line start within [`LINE_SEARCH`] bytes (so the replay does not open
    /// with half a line or the tail of an escape sequence).
    pub fn replay(&self) -> Vec<u8> {
        let skip = if self.wrapped {
            self.bytes
                .iter()
                .take(LINE_SEARCH)
                .position(|&b| b == b'\n')
                .map_or(0, |i| i + 1)
        } else {
            0
        };
        self.bytes.iter().skip(skip).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_until_full() {
        let mut s = Scrollback::new(16);
        s.push(b"login: ");
        s.push(b"root");
        assert_eq!(s.replay(), b"login: root");
        assert_eq!(s.len(), 11);
    }

    #[test]
    fn forgets_the_oldest_and_replays_from_a_line_start() {
        let mut s = Scrollback::new(16);
        s.push(b"first line\r\nsecond\r\n");
        // 20 bytes pushed: the first 4 forgotten, so the replay starts after the next \n.
        assert_eq!(s.len(), 16);
        assert_eq!(s.replay(), b"second\r\n");
        s.push(b"x");
        assert_eq!(s.replay(), b"second\r\nx");
    }

    #[test]
    fn a_push_larger_than_the_ring_keeps_its_tail() {
        let mut s = Scrollback::new(4);
        s.push(b"abcdefgh");
        assert_eq!(s.len(), 4);
        // No line break to start from: all that is kept.
        assert_eq!(s.replay(), b"efgh");
    }

    #[test]
    fn a_zero_capacity_keeps_nothing() {
        let mut s = Scrollback::new(0);
        s.push(b"abc");
        assert!(s.is_empty());
        assert!(s.replay().is_empty());
    }
}
