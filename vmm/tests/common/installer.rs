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
    rect: (usize, usize, usize, usize),
    scratch: &Path,
) -> String {
    write_png(pixels, width, rect, scratch);
    ocr(tesseract, scratch, &[])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where tesseract reads a word starting with `word` in the rectangle (`x`, `y`, `w`, `h`)
/// of a picture: the centre of the first such word's box, in the picture's coordinates, or
/// `None`. A prefix, because tesseract runs the tightly set words of a button together
/// (egui's "Type clipboard" reads "Typeclipboard").
pub fn find_word(
    tesseract: &Path,
    pixels: &[u32],
    width: usize,
    rect: (usize, usize, usize, usize),
    word: &str,
    scratch: &Path,
) -> Option<(usize, usize)> {
    write_png(pixels, width, rect, scratch);
    // TSV: level, page, block, paragraph, line, word, left, top, width, height, conf, text.
    ocr(tesseract, scratch, &["tsv"]).lines().find_map(|line| {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 12 || !f[11].trim().starts_with(word) {
            return None;
        }
        let n = |i: usize| f[i].parse::<usize>().ok();
        Some((rect.0 + n(6)? + n(8)? / 2, rect.1 + n(7)? + n(9)? / 2))
    })
}

/// The text in the installer's one text field on its `width`x`height` screen (`pixels`),
/// or `None` when no field is there. The gtk theme draws a field white on the installer's
/// background, and nothing else between the title and the buttons of such a screen is pure
/// white; read on its own, three times bigger (tesseract skips a small boxed line in a
/// whole screen).
pub fn read_field(
    tesseract: &Path,
    pixels: &[u32],
    width: usize,
    height: usize,
    scratch: &Path,
) -> Option<String> {
    let (mut l, mut t, mut r, mut b) = (usize::MAX, usize::MAX, 0, 0);
    // Between the title (the banner above it has white in its picture) and the buttons.
    let rows = TITLE_ROWS.end..height.saturating_sub(60);
    for y in rows {
        for x in 0..width {
            if pixels[y * width + x] & 0xffffff == 0xffffff {
                (l, t, r, b) = (l.min(x), t.min(y), r.max(x), b.max(y));
            }
        }
    }
    if l > r || r - l < 40 || b - t < 10 || b - t > height / 4 {
        return None;
    }
    // Inside the field's frame (drawn in the theme's colour when focused, which would look
    // like a selection to `dark_text`).
    let (l, t, r, b) = (l + 3, t + 3, r - 3, b - 3);
    const SCALE: usize = 3;
    let (w, h) = (r + 1 - l, b + 1 - t);
    let field: Vec<u32> = (t..=b)
        .flat_map(|y| pixels[y * width + l..=y * width + r].iter().copied())
        .collect();
    let ink = dark_text(&field, w);
    let mut big = Vec::with_capacity(w * h * SCALE * SCALE);
    for y in 0..h * SCALE {
        for x in 0..w * SCALE {
            big.push(ink[(y / SCALE) * w + x / SCALE]);
        }
    }
    Some(read_text(
        tesseract,
        &big,
        w * SCALE,
        (0, 0, w * SCALE, h * SCALE),
        scratch,
    ))
}

/// A field's picture (`w` wide) as dark text on white, grey: a selection (the installer
/// selects the field's value: white text on the theme's teal) is turned into dark text on
/// white too, since tesseract reads light text on colour poorly. The selection is the box
/// of coloured pixels (channels far apart) when they fill it.
fn dark_text(field: &[u32], w: usize) -> Vec<u32> {
    let channels = |c: u32| [(c >> 16) & 0xff, (c >> 8) & 0xff, c & 0xff];
    let coloured = |c: u32| {
        let ch = channels(c);
        ch.iter().max().unwrap() - ch.iter().min().unwrap() > 60
    };
    let (mut l, mut t, mut r, mut b) = (usize::MAX, usize::MAX, 0, 0);
    let mut n = 0;
    for (i, _) in field.iter().enumerate().filter(|(_, c)| coloured(**c)) {
        let (x, y) = (i % w, i / w);
        (l, t, r, b) = (l.min(x), t.min(y), r.max(x), b.max(y));
        n += 1;
    }
    // A selection fills its box; the coloured fringes of text drawn with subpixel
    // smoothing do not.
    if l > r || n * 2 < (r + 1 - l) * (b + 1 - t) {
        (l, t, r, b) = (1, 1, 0, 0);
    }
    field
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let (x, y) = (i % w, i / w);
            let [cr, cg, cb] = channels(c);
            let lum = (cr * 30 + cg * 59 + cb * 11) / 100;
            let v = if (l..=r).contains(&x) && (t..=b).contains(&y) {
                if coloured(c) { 0xff } else { 0xff - lum }
            } else {
                lum
            };
            v << 16 | v << 8 | v
        })
        .collect()
}

/// Writes the rectangle (`x`, `y`, `w`, `h`) of a picture (`pixels`, `width` wide) to
/// `path` as a PNG.
pub fn write_png(
    pixels: &[u32],
    width: usize,
    (x, y, w, h): (usize, usize, usize, usize),
    path: &Path,
) {
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in y..y + h {
        for &c in &pixels[row * width + x..row * width + x + w] {
            rgb.extend_from_slice(&[(c >> 16) as u8, (c >> 8) as u8, c as u8]);
        }
    }
    let file = std::fs::File::create(path).expect("create the OCR scratch PNG");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().expect("write a PNG header");
    writer.write_image_data(&rgb).expect("write the PNG");
    writer.finish().expect("finish the PNG");
}

/// What tesseract prints for the picture `png` (`config`: its output configs, e.g. tsv).
fn ocr(tesseract: &Path, png: &Path, config: &[&str]) -> String {
    let out = Command::new(tesseract)
        .arg(png)
        .arg("-")
        .args(config)
        // One thread: the guest beside it needs the other CPU.
        .env("OMP_THREAD_LIMIT", "1")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tesseract.display()));
    assert!(
        out.status.success(),
        "tesseract {}: {}",
        png.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
