//! Debian's graphical installer as a test sees it: which of its screens is showing, read
//! from a screenshot by OCR (tesseract), and where its buttons are. Shared by the app's
//! graphical install test and the installer benchmark (included by path).
//!
//! Why OCR: every screen of debian-installer's gtk frontend writes its title in text under
//! the banner ("Select a language", "Select your location", …), and those titles are
//! distinct sentences of the installer's own templates. A screen counts as reached when
//! its title is read on the guest's screen and the title of the screen before it is not:
//! neither a stale frame nor a black or half-drawn one can pass, and no other screen of the
//! installer carries the sentence. Pixel comparison with a QEMU reference would also work,
//! but needs a second installer boot per run for the reference, and breaks on the blinking
//! text cursor and the pointer.

use std::path::Path;
use std::process::Command;

/// The installer CD test-assets.sh makes from debian-installer-12-netboot-amd64.
pub const ISO: &str = "debian-installer-gtk.iso";

/// What a screen of the installer says, and which title it must show.
#[derive(Clone, Copy, Debug)]
pub struct Screen {
    pub name: &'static str,
    pub title: &'static str,
}

/// isolinux's menu (vesamenu on the splash), from the CD's own isolinux.cfg.
pub const BOOT_MENU: Screen = Screen {
    name: "boot menu",
    title: "installer menu (BIOS mode)",
};
pub const LANGUAGE: Screen = Screen {
    name: "language",
    title: "Select a language",
};
pub const LOCATION: Screen = Screen {
    name: "location",
    title: "Select your location",
};
pub const KEYBOARD: Screen = Screen {
    name: "keyboard",
    title: "Configure the keyboard",
};

/// The installer's background (the gtk theme's window colour), around the dialog and in
/// its margins to the screen's left, right and bottom edges.
pub const BACKGROUND: u32 = 0xede9e3;

/// The part of a screen the test reads: every title it looks for is in the top 40% (the
/// boot menu's at a third of the way down, the installer's under its banner). OCR of the
/// whole screen took 10-30 s in the nested test host (TCG), slowing the guest beside it.
pub const READ_FRACTION: f64 = 0.4;

/// The rows of the installer's own 1024x768 screens (not the boot menu's) that hold the
/// title: the line under the 75-row banner. Read alone, without the banner: with the
/// banner's picture above it and little else, tesseract took the title for part of the
/// picture and read only "debian 12".
pub const TITLE_ROWS: std::ops::Range<usize> = 76..124;

/// The text tesseract reads in the rectangle (`x`, `y`, `w`, `h`) of a picture (`pixels`,
/// `width` wide), its whitespace folded to single spaces; `scratch` is where the
/// rectangle is written as a PNG for tesseract.
pub fn read_text(
    tesseract: &Path,
    pixels: &[u32],
    width: usize,
    (x, y, w, h): (usize, usize, usize, usize),
    scratch: &Path,
) -> String {
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in y..y + h {
        for &c in &pixels[row * width + x..row * width + x + w] {
            rgb.extend_from_slice(&[(c >> 16) as u8, (c >> 8) as u8, c as u8]);
        }
    }
    let file = std::fs::File::create(scratch).expect("create the OCR scratch PNG");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().expect("write a PNG header");
    writer.write_image_data(&rgb).expect("write the PNG");
    writer.finish().expect("finish the PNG");
    let out = Command::new(tesseract)
        .arg(scratch)
        .arg("-")
        // One thread: the guest beside it needs the other CPU.
        .env("OMP_THREAD_LIMIT", "1")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tesseract.display()));
    assert!(
        out.status.success(),
        "tesseract {}: {}",
        scratch.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The text on the top part ([`READ_FRACTION`]) of a guest's screenshot `png`.
pub fn read_screen(tesseract: &Path, png: &Path) -> String {
    let (w, h, px) = super::png_pixels(png);
    let rows = (h as f64 * READ_FRACTION) as usize;
    read_text(
        tesseract,
        &px,
        w,
        (0, 0, w, rows),
        &png.with_extension("top.png"),
    )
}

/// Whether the text read off a screenshot shows `screen` and not the one before it.
pub fn shows(text: &str, screen: Screen, before: Option<Screen>) -> bool {
    text.contains(screen.title) && before.is_none_or(|b| !text.contains(b.title))
}

/// The centre of the installer's Continue button on its `width`x`height` screen. The gtk
/// frontend puts its buttons in the bottom right corner with fixed margins, Continue last:
/// on its 1024x768 screen the button spans x 916..1009, y 730..755. (OCR does not read the
/// buttons' labels reliably: the frame around them breaks the words up.)
pub fn continue_button(width: usize, height: usize) -> (usize, usize) {
    (width - 62, height - 26)
}

/// Where the installer's screen is drawn inside a bigger picture (`pixels`, `width` wide):
/// the bounding box of its background colour, which reaches the screen's left, right and
/// bottom edges; the top follows from the guest's aspect (`guest_w`x`guest_h`). Returns
/// (left, top, scale) with scale = drawn width / guest width, or `None` if the colour is
/// not there. Scaled drawing blends colours at the box's edges: a tolerance of a few
/// steps per channel, and a box a pixel off at most.
pub fn find_installer_screen(
    pixels: &[u32],
    width: usize,
    guest_w: usize,
    guest_h: usize,
) -> Option<(f64, f64, f64)> {
    let near = |c: u32| {
        (0..3).all(|i| {
            let a = (c >> (8 * i)) & 0xff;
            let b = (BACKGROUND >> (8 * i)) & 0xff;
            a.abs_diff(b) <= 4
        })
    };
    let (mut l, mut r, mut b) = (usize::MAX, 0, 0);
    for (i, _) in pixels.iter().enumerate().filter(|(_, c)| near(**c)) {
        let (x, y) = (i % width, i / width);
        l = l.min(x);
        r = r.max(x);
        b = b.max(y);
    }
    if l > r {
        return None;
    }
    let scale = (r + 1 - l) as f64 / guest_w as f64;
    let top = (b + 1) as f64 - guest_h as f64 * scale;
    Some((l as f64, top, scale))
}
