//! A minimal RFB client that measures one full-frame update from any VNC server.
//!
//!     cargo run --release -p display --example rfb_measure -- HOST:PORT \
//!         --encoding raw|hextile|zrle|tight|NUMBER [--compress 0-9] [--quality 0-9] \
//!         [--save frame.ppm] [--update-out update.bin]
//!
//! It connects (protocol 3.3, 3.7 or 3.8, security type None only), asks for 32 bpp
//! little-endian RGB888 (the pixel format of the reference figures), offers exactly one
//! encoding (plus the compression / JPEG quality pseudo-encodings when given), sends one
//! non-incremental FramebufferUpdateRequest for the whole screen and decodes the reply with
//! `display::decode`, so the update's end is found by parsing, not guessed. It prints the
//! update's bytes (message header included), rectangles, the share of the screen they
//! cover, the times to the first byte and to the whole update (from the request), and the
//! time from connecting to the whole update (a new client's first full frame). `--save` writes the
//! decoded screen as a PPM picture, `--update-out` the update's bytes as received.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use display::decode::{DecodedFrame, Decoder};
use display::encoding::number;
use display::pixel::PixelFormat;

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: u64,
    /// When set, a copy of everything read.
    record: Option<Vec<u8>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if let Some(rec) = &mut self.record {
            rec.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

struct Args {
    addr: String,
    encoding: i32,
    compress: Option<u8>,
    quality: Option<u8>,
    save: Option<String>,
    update_out: Option<String>,
}

fn usage() -> String {
    "usage: rfb_measure HOST:PORT --encoding raw|hextile|zrle|tight|NUMBER \
     [--compress 0-9] [--quality 0-9] [--save FILE.ppm] [--update-out FILE]"
        .to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut addr = None;
    let mut encoding = None;
    let mut compress = None;
    let mut quality = None;
    let mut save = None;
    let mut update_out = None;
    while let Some(a) = it.next() {
        let mut val = |what: &str| it.next().ok_or(format!("{what} needs a value"));
        match a.as_str() {
            "--encoding" => {
                let v = val("--encoding")?;
                encoding = Some(match v.as_str() {
                    "raw" => number::RAW,
                    "hextile" => number::HEXTILE,
                    "zrle" => number::ZRLE,
                    "tight" => number::TIGHT,
                    n => n.parse().map_err(|_| format!("unknown encoding {n}"))?,
                });
            }
            "--compress" => compress = Some(level(&val("--compress")?)?),
            "--quality" => quality = Some(level(&val("--quality")?)?),
            "--save" => save = Some(val("--save")?),
            "--update-out" => update_out = Some(val("--update-out")?),
            "-h" | "--help" => return Err(usage()),
            _ if addr.is_none() && !a.starts_with('-') => addr = Some(a),
            _ => return Err(format!("unexpected argument {a}\n{}", usage())),
        }
    }
    Ok(Args {
        addr: addr.ok_or_else(usage)?,
        encoding: encoding.ok_or_else(usage)?,
        compress,
        quality,
        save,
        update_out,
    })
}

fn level(s: &str) -> Result<u8, String> {
    match s.parse::<u8>() {
        Ok(v) if v <= 9 => Ok(v),
        _ => Err(format!("level {s} is not 0-9")),
    }
}

fn read_exact<R: Read>(r: &mut R, n: usize) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_u32<R: Read>(r: &mut R) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// A server's reason string, bounded.
fn read_reason<R: Read>(r: &mut R) -> String {
    match read_u32(r) {
        Ok(len) if len <= 4096 => read_exact(r, len as usize)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn run(args: &Args) -> Result<(), String> {
    let t_connect = Instant::now();
    let stream =
        TcpStream::connect(&args.addr).map_err(|e| format!("connect {}: {e}", args.addr))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let mut r = Counting {
        inner: BufReader::with_capacity(1 << 16, stream),
        count: 0,
        record: None,
    };
    let io = |e: std::io::Error| format!("i/o: {e}");

    // Version.
    let v = read_exact(&mut r, 12).map_err(io)?;
    let minor = match &v[..] {
        b"RFB 003.003\n" => 3,
        b"RFB 003.007\n" => 7,
        b"RFB 003.008\n" => 8,
        _ if v.starts_with(b"RFB 003.") => {
            // Unknown minor versions (e.g. 3.889 of Apple) answer as 3.8 or 3.3.
            let m: u32 = std::str::from_utf8(&v[8..11])
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3);
            if m >= 8 { 8 } else { 3 }
        }
        _ => {
            return Err(format!(
                "not an RFB server: {:?}",
                String::from_utf8_lossy(&v)
            ));
        }
    };
    w.write_all(format!("RFB 003.00{minor}\n").as_bytes())
        .map_err(io)?;

    // Security: None only.
    if minor == 3 {
        match read_u32(&mut r).map_err(io)? {
            1 => {}
            0 => return Err(format!("server refused: {}", read_reason(&mut r))),
            t => {
                return Err(format!(
                    "server requires security type {t}; only None is supported"
                ));
            }
        }
    } else {
        let n = read_exact(&mut r, 1).map_err(io)?[0];
        if n == 0 {
            return Err(format!("server refused: {}", read_reason(&mut r)));
        }
        let types = read_exact(&mut r, n.into()).map_err(io)?;
        if !types.contains(&1) {
            return Err(format!(
                "server offers security types {types:?}; only None (1) is supported"
            ));
        }
        w.write_all(&[1]).map_err(io)?;
        if minor == 8 && read_u32(&mut r).map_err(io)? != 0 {
            return Err(format!("security failed: {}", read_reason(&mut r)));
        }
    }

    // ClientInit (shared) and ServerInit.
    w.write_all(&[1]).map_err(io)?;
    let init = read_exact(&mut r, 24).map_err(io)?;
    let width = u16::from_be_bytes([init[0], init[1]]);
    let height = u16::from_be_bytes([init[2], init[3]]);
    let name_len = u32::from_be_bytes([init[20], init[21], init[22], init[23]]);
    let name = if name_len <= 4096 {
        String::from_utf8_lossy(&read_exact(&mut r, name_len as usize).map_err(io)?).into_owned()
    } else {
        return Err(format!("server name of {name_len} bytes"));
    };
    let handshake = t_connect.elapsed();

    // SetPixelFormat (32 bpp RGB888 little-endian), SetEncodings, FramebufferUpdateRequest.
    let pf = PixelFormat::NATIVE;
    let mut msg = vec![0u8, 0, 0, 0];
    msg.extend_from_slice(&pf.to_bytes());
    let mut encodings = vec![args.encoding];
    if let Some(c) = args.compress {
        encodings.push(number::COMPRESS_LEVEL_0 + i32::from(c));
    }
    if let Some(q) = args.quality {
        encodings.push(number::JPEG_QUALITY_0 + i32::from(q));
    }
    msg.extend_from_slice(&[2, 0]);
    msg.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
    for e in &encodings {
        msg.extend_from_slice(&e.to_be_bytes());
    }
    w.write_all(&msg).map_err(io)?;
    let mut req = vec![3u8, 0, 0, 0, 0, 0];
    req.extend_from_slice(&width.to_be_bytes());
    req.extend_from_slice(&height.to_be_bytes());
    w.write_all(&req).map_err(io)?;
    let t_request = Instant::now();

    let mut dec = Decoder::new(&pf);
    let mut fb = DecodedFrame::new(width.into(), height.into());
    loop {
        if args.update_out.is_some() {
            r.record = Some(Vec::new());
        }
        let ty = read_exact(&mut r, 1).map_err(io)?[0];
        let start = r.count - 1;
        let t_first = t_request.elapsed();
        match ty {
            0 => {
                let h = read_exact(&mut r, 3).map_err(io)?;
                let count = u16::from_be_bytes([h[1], h[2]]);
                let rects = dec
                    .decode_rects(&mut r, count, &mut fb)
                    .map_err(|e| format!("decoding the update: {e}"))?;
                let t_done = t_request.elapsed();
                let t_total = t_connect.elapsed();
                let bytes = r.count - start;
                let mut covered = 0usize;
                let mut per_encoding: Vec<(i32, usize)> = Vec::new();
                for d in &rects {
                    covered += d.rect.area();
                    match per_encoding.iter_mut().find(|(e, _)| *e == d.encoding) {
                        Some((_, n)) => *n += 1,
                        None => per_encoding.push((d.encoding, 1)),
                    }
                }
                let area = usize::from(width) * usize::from(height);
                println!(
                    "server: {name:?} {width}x{height}, RFB 3.{minor}, handshake {:.1} ms",
                    handshake.as_secs_f64() * 1e3
                );
                println!("encoding {} (offered {:?})", args.encoding, encodings);
                println!("update bytes: {bytes}");
                println!(
                    "rectangles: {} {:?} (encoding, count)",
                    rects.len(),
                    per_encoding
                );
                println!(
                    "covered: {:.1}% of the screen (overlaps count twice)",
                    covered as f64 * 100.0 / area.max(1) as f64
                );
                println!(
                    "first byte after {:.2} ms, whole update after {:.2} ms",
                    t_first.as_secs_f64() * 1e3,
                    t_done.as_secs_f64() * 1e3
                );
                // What a new client waits for: TCP connect to the update's last byte.
                println!(
                    "connect to whole update {:.2} ms",
                    t_total.as_secs_f64() * 1e3
                );
                if let (Some(path), Some(rec)) = (&args.update_out, &r.record) {
                    std::fs::write(path, rec).map_err(|e| format!("{path}: {e}"))?;
                    println!("update bytes written to {path}");
                }
                if let Some(path) = &args.save {
                    save_ppm(path, &fb).map_err(|e| format!("{path}: {e}"))?;
                    println!("saved {path}");
                }
                return Ok(());
            }
            1 => {
                // SetColourMapEntries: skip (we asked for true colour).
                let h = read_exact(&mut r, 5).map_err(io)?;
                let n = u16::from_be_bytes([h[3], h[4]]);
                read_exact(&mut r, usize::from(n) * 6).map_err(io)?;
            }
            2 => {} // Bell.
            3 => {
                read_exact(&mut r, 3).map_err(io)?;
                let len = read_u32(&mut r).map_err(io)?;
                // Skip without trusting the length for an allocation.
                std::io::copy(&mut (&mut r).take(u64::from(len)), &mut std::io::sink())
                    .map_err(io)?;
            }
            t => return Err(format!("unexpected server message type {t}")),
        }
    }
}

fn save_ppm(path: &str, fb: &DecodedFrame) -> std::io::Result<()> {
    let mut out = format!("P6\n{} {}\n255\n", fb.width, fb.height).into_bytes();
    for p in &fb.pixels {
        out.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, *p as u8]);
    }
    std::fs::write(path, out)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rfb_measure: {e}");
            ExitCode::FAILURE
        }
    }
}
