//! VNC Authentication (RFC 6143 §7.2.2): the server sends 16 random bytes, the client
//! returns them DES-encrypted (ECB, two blocks) with the password as key. The password's
//! first 8 bytes are the key, each byte bit-reversed (a quirk of the original
//! implementation that every client copies); longer passwords are cut, shorter ones padded
//! with zeros. This is weak by today's standards; the server therefore listens on loopback
//! by default and refuses other addresses without a password.
//!
//! The password never appears in logs: [`Password`]'s `Debug` prints a placeholder.

use std::io::{self, Read};
use std::path::Path;

use des::Des;
use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockEncrypt, KeyInit};

/// A VNC password (at most 8 significant bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    pub fn new(p: impl AsRef<[u8]>) -> Self {
        Password(p.as_ref().to_vec())
    }

    /// The first line of a text file (without the line ending). An empty line is an error:
    /// an empty password would silently mean "no protection".
    pub fn from_file(path: &Path) -> io::Result<Self> {
        let mut data = Vec::new();
        std::fs::File::open(path)?
            .take(4096)
            .read_to_end(&mut data)?;
        let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = first.strip_suffix(b"\r").unwrap_or(first).to_vec();
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("password file {} has an empty first line", path.display()),
            ));
        }
        Ok(Password(line))
    }

    fn key(&self) -> [u8; 8] {
        let mut key = [0u8; 8];
        for (k, p) in key.iter_mut().zip(self.0.iter()) {
            *k = p.reverse_bits();
        }
        key
    }

    /// What a client answers to `challenge` with this password.
    pub fn response(&self, challenge: &[u8; 16]) -> [u8; 16] {
        des_ecb(&self.key(), challenge)
    }

    /// Checks a client's answer in constant time.
    pub fn verify(&self, challenge: &[u8; 16], response: &[u8; 16]) -> bool {
        let want = self.response(challenge);
        want.iter()
            .zip(response.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// The 8-byte obfuscated form TigerVNC's and RealVNC's `vncpasswd` write (DES with
    /// the fixed key those programs share), for handing to `vncviewer -passwd FILE`.
    pub fn obfuscated(&self) -> [u8; 8] {
        // The shared key is 17 52 6b 06 23 4e 58 07 in the original code's bit order;
        // bit-reversed, as for the challenge, it is e8 4a d6 60 c4 72 1a e0 for plain DES.
        const FIXED_KEY: [u8; 8] = [0xe8, 0x4a, 0xd6, 0x60, 0xc4, 0x72, 0x1a, 0xe0];
        let mut plain = [0u8; 8];
        for (d, s) in plain.iter_mut().zip(self.0.iter()) {
            *d = *s;
        }
        let c = Des::new(GenericArray::from_slice(&FIXED_KEY));
        let mut block = GenericArray::clone_from_slice(&plain);
        c.encrypt_block(&mut block);
        block.into()
    }
}

fn des_ecb(key: &[u8; 8], data: &[u8; 16]) -> [u8; 16] {
    let c = Des::new(GenericArray::from_slice(key));
    let mut out = *data;
    for chunk in out.chunks_exact_mut(8) {
        c.encrypt_block(GenericArray::from_mut_slice(chunk));
    }
    out
}

/// 16 unpredictable bytes from the kernel.
pub fn new_challenge() -> io::Result<[u8; 16]> {
    let mut c = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut c)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        // Reference computed with OpenSSL's DES-ECB under the bit-reversed key for
        // "password" (0e 86 ce ce ee f6 4e 26), challenge 00 01 .. 0f.
        let challenge: [u8; 16] = std::array::from_fn(|i| i as u8);
        let want = [
            0xb8, 0x66, 0x92, 0x41, 0x25, 0xc8, 0xee, 0xbb, 0x9d, 0xeb, 0xc1, 0xdb, 0x61, 0xc5,
            0x38, 0xe2,
        ];
        let p = Password::new("password");
        assert_eq!(p.response(&challenge), want);
        assert!(p.verify(&challenge, &want));
        assert!(!Password::new("passwore").verify(&challenge, &want));
        // Only the first 8 bytes count.
        assert!(Password::new("password-and-more").verify(&challenge, &want));
    }

    #[test]
    fn debug_never_shows_the_password() {
        assert!(!format!("{:?}", Password::new("hunter2")).contains("hunter2"));
    }

    #[test]
    fn file_first_line() {
        let dir = std::env::temp_dir().join(format!("vmdesk-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "secret\r\nignored\n").unwrap();
        assert_eq!(Password::from_file(&f).unwrap(), Password::new("secret"));
        std::fs::write(&f, "\n").unwrap();
        assert!(Password::from_file(&f).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
