//! Live thumbnails of running VMs' screens for the list.
//!
//! One background thread asks each running VM for a `screendump` into the runtime dir
//! every [`PERIOD`], decodes and shrinks it (image), and hands the pixels to the window,
//! which uploads them as a texture. The window never waits on a VM: a VM that is slow to
//! answer only delays its own next picture. The thread ends when the window's [`Thumbnails`]
//! is dropped. A stopped VM has no thumbnail (the list shows a placeholder).

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use eframe::egui;

use crate::service::VmService;

/// How often each running VM's picture is renewed.
pub const PERIOD: Duration = Duration::from_secs(2);
/// The largest thumbnail, in pixels.
pub const MAX_W: u32 = 160;
pub const MAX_H: u32 = 100;
/// The size a thumbnail (or its placeholder) takes in the list.
pub const SHOWN: egui::Vec2 = egui::vec2(96.0, 60.0);

type Grabbed = (String, Result<egui::ColorImage, String>);

pub struct Thumbnails {
    /// The VMs to picture; the worker holds only a weak reference, so dropping this ends it.
    wanted: Arc<Mutex<Vec<String>>>,
    tx: Sender<Grabbed>,
    rx: Receiver<Grabbed>,
    textures: HashMap<String, egui::TextureHandle>,
    started: bool,
}

impl Default for Thumbnails {
    fn default() -> Self {
        let (tx, rx) = channel();
        Thumbnails {
            wanted: Default::default(),
            tx,
            rx,
            textures: HashMap::new(),
            started: false,
        }
    }
}

impl Thumbnails {
    /// Says which VMs are running now, takes in new pictures, and starts the worker the
    /// first time there is something to picture.
    pub fn update(&mut self, ctx: &egui::Context, vms: &VmService, live: Vec<String>) {
        self.textures.retain(|n, _| live.contains(n));
        let any = !live.is_empty();
        if let Ok(mut w) = self.wanted.lock() {
            *w = live;
        }
        if any && !self.started {
            self.started = true;
            spawn(
                Arc::downgrade(&self.wanted),
                vms.clone(),
                self.tx.clone(),
                ctx.clone(),
            );
        }
        while let Ok((name, img)) = self.rx.try_recv() {
            match img {
                Ok(img) => match self.textures.get_mut(&name) {
                    Some(t) => t.set(img, egui::TextureOptions::LINEAR),
                    None => {
                        let t = ctx.load_texture(
                            format!("thumb-{name}"),
                            img,
                            egui::TextureOptions::LINEAR,
                        );
                        self.textures.insert(name, t);
                    }
                },
                Err(e) => tracing::debug!("thumbnail of '{name}': {e}"),
            }
        }
    }

    /// Whether the worker thread was started.
    pub fn started(&self) -> bool {
        self.started
    }

    pub fn get(&self, name: &str) -> Option<&egui::TextureHandle> {
        self.textures.get(name)
    }
}

fn spawn(
    wanted: Weak<Mutex<Vec<String>>>,
    vms: VmService,
    tx: Sender<Grabbed>,
    ctx: egui::Context,
) {
    std::thread::Builder::new()
        .name("thumbnails".into())
        .spawn(move || {
            loop {
                let Some(names) = wanted
                    .upgrade()
                    .and_then(|w| w.lock().ok().map(|w| w.clone()))
                else {
                    return;
                };
                for name in names {
                    let img = vms.read_screen(&name, decode);
                    if tx.send((name, img)).is_err() {
                        return;
                    }
                }
                ctx.request_repaint();
                std::thread::sleep(PERIOD);
            }
        })
        .expect("spawning a thread");
}

/// A screen dump decoded and shrunk to fit [`MAX_W`]x[`MAX_H`].
fn decode(path: &Path) -> Result<egui::ColorImage, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let small = img.thumbnail(MAX_W, MAX_H).to_rgba8();
    let size = [small.width() as usize, small.height() as usize];
    Ok(egui::ColorImage::from_rgba_unmultiplied(
        size,
        small.as_raw(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    #[test]
    fn a_screendump_becomes_a_small_picture() {
        let dir = std::env::temp_dir().join(format!("vmdesk-thumb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rt = crate::runtime::Runtime::at(&dir);
        let vms = VmService::new(crate::library::Library::at(dir.join("vms")), rt.clone());
        // A VMM's control socket that answers screendump with a 640x400 red-and-blue screen.
        let listener = std::os::unix::net::UnixListener::bind(rt.socket_path("vm")).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["execute"], "screendump");
            let out = std::path::PathBuf::from(v["path"].as_str().unwrap());
            let pixels: Vec<u32> = (0..640 * 400)
                .map(|i| if i % 640 < 320 { 0xff0000 } else { 0x0000ff })
                .collect();
            crate::runtime::write_png(&out, 640, 400, &pixels).unwrap();
            (&s).write_all(b"{\"return\":{\"width\":640,\"height\":400}}\n")
                .unwrap();
        });
        let img = vms.read_screen("vm", decode).unwrap();
        server.join().unwrap();
        assert_eq!(img.size, [160, 100]);
        assert_eq!(img.pixels[0], egui::Color32::from_rgb(255, 0, 0));
        assert_eq!(img.pixels[159], egui::Color32::from_rgb(0, 0, 255));
        assert!(!dir.join("vm.thumb.png").exists(), "the dump is removed");
        // A VM that does not answer: an error, no picture, nothing left behind.
        assert!(vms.read_screen("gone", decode).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
