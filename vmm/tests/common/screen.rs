//! What a test sees of a guest's screen and how it types into it: PNG screenshots as
//! pixels, and vncdotool. Shared by the vmm's and the app's tests (the app includes this
//! file by path).

use std::path::Path;
use std::process::Command;

/// A PNG's pixels as native 0x00RRGGBB (grey expanded to all three), with its size.
pub fn png_pixels(path: &Path) -> (usize, usize, Vec<u32>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a sane PNG")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let samples = info.color_type.samples();
    let px = buf[..info.buffer_size()]
        .chunks_exact(samples)
        .map(|c| match samples {
            1 | 2 => u32::from(c[0]) * 0x01_0101,
            _ => u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]),
        })
        .collect();
    (info.width as usize, info.height as usize, px)
}

/// Runs vncdotool against 127.0.0.1::`port`; fails the test if it fails.
pub fn vncdo(vncdo: &Path, port: u16, args: &[&str]) {
    let out = Command::new(vncdo)
        .arg("-s")
        .arg(format!("127.0.0.1::{port}"))
        .args(args)
        .output()
        .expect("run vncdo");
    assert!(
        out.status.success(),
        "vncdo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
