//! The VNC server driven by our own client over real loopback sockets.

mod rfb_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use display::client::{Client, ClientError, ClientOptions, ServerEvent};
use display::encoding::{Rect, number};
use display::rfb::protocol::{ClientMessage, fence};
use display::rfb::{Password, clipboard};
use rfb_support::{Harness, Input, formats};

#[test]
fn raw_full_and_incremental_updates_in_every_pixel_format() {
    let h = Harness::new(203, 97);
    for (name, pf) in formats() {
        let mut c = h.connect();
        c.set_pixel_format(pf).unwrap();
        c.set_encodings(&[number::RAW]).unwrap();
        c.update(false).unwrap();
        h.assert_matches(&c);
        // A small change arrives alone, as a small rectangle.
        h.surface.fill_rect(Rect::new(100, 50, 5, 3), 0x00ab_cdef);
        let rects = c.update(true).unwrap();
        assert_eq!(
            rects,
            vec![(Rect::new(100, 50, 5, 3), number::RAW)],
            "{name}"
        );
        h.assert_matches(&c);
        rfb_support::paint(&h.surface, 7);
        c.update(true).unwrap();
        h.assert_matches(&c);
        rfb_support::paint(&h.surface, 1);
    }
}

#[test]
fn every_protocol_version_connects() {
    let h = Harness::new(64, 48);
    for minor in [3, 7, 8] {
        let mut c = h.connect_with(None, true, minor);
        c.set_encodings(&[number::RAW]).unwrap();
        c.update(false).unwrap();
        h.assert_matches(&c);
    }
}

#[test]
fn copy_rect_scroll() {
    let h = Harness::new(320, 200);
    let mut c = h.connect();
    c.set_encodings(&[number::COPY_RECT, number::RAW]).unwrap();
    c.update(false).unwrap();
    h.assert_matches(&c);
    // Scroll up 16 lines and draw a new bottom line, like a console.
    h.surface.copy_rect(Rect::new(0, 16, 320, 184), 0, 0);
    h.surface.fill_rect(Rect::new(0, 184, 320, 16), 0x0000_00aa);
    let rects = c.update(true).unwrap();
    assert_eq!(rects[0], (Rect::new(0, 0, 320, 184), number::COPY_RECT));
    assert!(
        rects[1..]
            .iter()
            .all(|(r, e)| *e == number::RAW && r.y >= 184),
        "{rects:?}"
    );
    h.assert_matches(&c);
}

#[test]
fn vnc_auth_accepts_right_and_rejects_wrong_password() {
    let h = Harness::with(32, 32, |cfg| cfg.password = Some(Password::new("s3cret")));
    for minor in [3, 7, 8] {
        let mut c = h.connect_with(Some("s3cret"), true, minor);
        c.update(false).unwrap();
        h.assert_matches(&c);
        let e = Client::connect(
            h.addr(),
            &ClientOptions {
                minor,
                password: Some(Password::new("wrong")),
                ..ClientOptions::default()
            },
        )
        .err()
        .expect("wrong password must fail");
        match (minor, e) {
            (8, ClientError::AuthFailed(reason)) => assert!(!reason.is_empty()),
            (_, ClientError::AuthFailed(_)) => {}
            (_, other) => panic!("3.{minor}: {other}"),
        }
    }
    // No password at all: the client cannot proceed.
    let e = Client::connect(h.addr(), &ClientOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, ClientError::NeedPassword), "{e}");
}

#[test]
fn several_clients_each_get_updates() {
    let h = Harness::new(128, 128);
    let mut clients: Vec<Client> = (0..4).map(|_| h.connect()).collect();
    for c in &mut clients {
        c.update(false).unwrap();
    }
    h.surface.fill_rect(Rect::new(10, 10, 20, 20), 0x0012_3456);
    for c in &mut clients {
        c.update(true).unwrap();
        h.assert_matches(c);
    }
    assert_eq!(h.server.client_count(), 4);
}

#[test]
fn non_shared_client_disconnects_the_others() {
    let h = Harness::new(64, 64);
    let mut a = h.connect();
    a.update(false).unwrap();
    let mut b = h.connect_with(None, false, 8);
    b.update(false).unwrap();
    // a is gone: its next read ends.
    a.request(true).ok();
    let r = a.read_event();
    assert!(r.is_err(), "{r:?}");
    h.assert_matches(&b);
}

fn assert_dropped(c: &mut Client) {
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    loop {
        match c.read_event() {
            Ok(_) => continue,
            Err(ClientError::Io(e)) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "server did not drop the client: {e}"
                );
                return;
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
}

#[test]
fn malformed_messages_drop_only_that_client() {
    let h = Harness::new(64, 64);
    let mut bystander = h.connect();
    bystander.update(false).unwrap();
    let mut bad_pf = vec![0u8, 0, 0, 0];
    let mut pf = display::pixel::PixelFormat::NATIVE.to_bytes();
    pf[3] = 0; // colour map
    bad_pf.extend_from_slice(&pf);
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("unknown type", vec![7, 1, 2, 3]),
        ("HTTP request", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("colour-map pixel format", bad_pf),
        ("fence longer than 64", vec![248, 0, 0, 0, 0, 0, 0, 0, 200]),
        ("QEMU unknown subtype", vec![255, 77]),
        (
            "SetDesktopSize with no screens",
            vec![251, 0, 0, 1, 0, 1, 0, 0],
        ),
        // Truncated messages of every type, then the client goes away.
        ("truncated SetPixelFormat", vec![0, 0, 0, 0, 32]),
        ("truncated SetEncodings", vec![2, 0, 0, 5, 0, 0, 0]),
        ("truncated FramebufferUpdateRequest", vec![3, 1, 0]),
        ("truncated KeyEvent", vec![4, 1]),
        ("truncated PointerEvent", vec![5, 0, 1]),
        (
            "truncated ClientCutText",
            vec![6, 0, 0, 0, 0, 0, 0, 10, b'a'],
        ),
        ("truncated EnableContinuousUpdates", vec![150, 1, 0]),
        ("truncated Fence", vec![248, 0, 0, 0, 0, 0, 0, 0, 10, 1]),
        (
            "truncated SetDesktopSize",
            vec![251, 0, 4, 0, 3, 0, 1, 0, 0, 0],
        ),
        ("truncated QEMU key", vec![255, 0, 0, 1, 0]),
    ];
    for (name, bytes) in garbage {
        let mut victim = h.connect();
        victim.update(false).unwrap();
        victim.stream().write_all(&bytes).unwrap();
        if name.starts_with("truncated") {
            victim.stream().shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert_dropped(&mut victim);
        // The bystander goes on.
        h.surface
            .fill_rect(Rect::new(0, 0, 8, 8), bytes.len() as u32 * 0x010101);
        bystander.update(true).unwrap();
        h.assert_matches(&bystander);
        let _ = name;
    }
    // The server hangs up before it has taken the session off its list (it joins the
    // session's writer thread in between), so the count may lag the hang-up a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.server.client_count() != 1 {
        assert!(
            Instant::now() < deadline,
            "{} clients left, not 1",
            h.server.client_count()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn stalled_message_body_times_out() {
    let h = Harness::with(32, 32, |c| c.read_timeout = Duration::from_millis(300));
    let mut victim = h.connect();
    victim.update(false).unwrap();
    // Half a KeyEvent, then silence (socket still open).
    victim.stream().write_all(&[4, 1, 0]).unwrap();
    let start = Instant::now();
    assert_dropped(&mut victim);
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn huge_cut_text_claim_is_skipped_without_dropping_others() {
    let h = Harness::new(32, 32);
    let mut other = h.connect();
    other.update(false).unwrap();
    let mut c = h.connect();
    c.update(false).unwrap();
    // Claim 4 GiB - 1 bytes (plain), send a little, keep going.
    c.stream()
        .write_all(&[6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff])
        .unwrap();
    c.stream().write_all(&vec![b'x'; 1 << 20]).unwrap();
    h.surface.fill_rect(Rect::new(1, 1, 1, 1), 0x00ff_ffff);
    other.update(true).unwrap();
    h.assert_matches(&other);
    drop(c);
    // A cut text within the limit reaches the input sink.
    other.send(&ClientMessage::CutText("hello".into())).unwrap();
    assert!(
        h.input
            .wait_for(1)
            .contains(&Input::Clipboard("hello".into()))
    );
}

#[test]
fn keys_pointer_and_qemu_extended_keys_reach_the_sink() {
    let h = Harness::new(100, 50);
    let mut c = h.connect();
    c.set_encodings(&[
        number::RAW,
        number::QEMU_EXTENDED_KEY_EVENT,
        number::POINTER_TYPE_CHANGE,
    ])
    .unwrap();
    c.update(false).unwrap();
    assert!(c.qemu_key_ack, "server must acknowledge QEMU key events");
    assert_eq!(c.pointer_absolute, Some(true));
    c.send(&ClientMessage::KeyEvent {
        down: true,
        keysym: 0x61,
    })
    .unwrap();
    c.send(&ClientMessage::QemuKeyEvent {
        down: true,
        keysym: 0xff52,
        keycode: 0xc8, // cursor up: E0 48
    })
    .unwrap();
    c.send(&ClientMessage::PointerEvent {
        buttons: 1,
        x: 5000,
        y: 7,
    })
    .unwrap();
    assert_eq!(
        h.input.wait_for(3),
        vec![
            Input::Key(0x61, true, None),
            Input::Key(0xff52, true, Some(0xe048)),
            Input::Pointer(99, 7, 1),
        ]
    );
}

#[test]
fn continuous_updates_and_fence() {
    let h = Harness::new(96, 64);
    let mut c = h.connect();
    c.set_encodings(&[number::RAW, number::CONTINUOUS_UPDATES, number::FENCE])
        .unwrap();
    c.request(false).unwrap();
    let mut saw_end = false;
    let mut saw_fence = false;
    // The announcements come before the update.
    loop {
        match c.read_event().unwrap() {
            ServerEvent::Fence { flags, .. } => {
                assert_ne!(flags & fence::REQUEST, 0);
                saw_fence = true;
            }
            ServerEvent::EndOfContinuousUpdates => saw_end = true,
            ServerEvent::Update(_) => break,
            _ => {}
        }
    }
    assert!(saw_end && saw_fence);
    c.send(&ClientMessage::Fence {
        flags: fence::REQUEST | fence::BLOCK_BEFORE,
        payload: b"ping".to_vec(),
    })
    .unwrap();
    c.send(&ClientMessage::EnableContinuousUpdates {
        enable: true,
        x: 0,
        y: 0,
        w: 96,
        h: 64,
    })
    .unwrap();
    loop {
        match c.read_event().unwrap() {
            ServerEvent::Fence { flags, payload } if flags & fence::REQUEST == 0 => {
                assert_eq!(payload, b"ping");
                assert_eq!(flags, fence::BLOCK_BEFORE);
                break;
            }
            _ => {}
        }
    }
    // No request: changes arrive anyway.
    for i in 0..3u32 {
        h.surface
            .fill_rect(Rect::new(i as u16 * 10, 0, 5, 5), 0x00ff_0000 + i);
        c.next_update().unwrap();
        h.assert_matches(&c);
    }
    c.send(&ClientMessage::EnableContinuousUpdates {
        enable: false,
        x: 0,
        y: 0,
        w: 96,
        h: 64,
    })
    .unwrap();
    loop {
        if c.read_event().unwrap() == ServerEvent::EndOfContinuousUpdates {
            break;
        }
    }
}

#[test]
fn extended_clipboard_both_ways() {
    let h = Harness::new(32, 32);
    let mut c = h.connect();
    c.set_encodings(&[number::RAW, number::EXTENDED_CLIPBOARD])
        .unwrap();
    c.request(false).unwrap();
    let caps = loop {
        if let ServerEvent::ExtendedCutText { flags, payload } = c.read_event().unwrap() {
            break clipboard::parse(flags, &payload, 1 << 20);
        }
    };
    assert!(
        matches!(caps, clipboard::ExtClipboard::Caps { .. }),
        "{caps:?}"
    );
    // Client -> server: provide UTF-8 text.
    let (flags, payload) = clipboard::provide("héllo wörld\nline 2", 1 << 20);
    c.send(&ClientMessage::ExtendedCutText { flags, payload })
        .unwrap();
    assert_eq!(
        h.input.wait_for(1),
        vec![Input::Clipboard("héllo wörld\nline 2".into())]
    );
    // Server -> client: notify, the client requests, the server provides.
    h.server.set_clipboard("from the guest ✓");
    loop {
        if let ServerEvent::ExtendedCutText { flags, payload } = c.read_event().unwrap() {
            assert_eq!(
                clipboard::parse(flags, &payload, 1 << 20),
                clipboard::ExtClipboard::Notify {
                    formats: clipboard::TEXT
                }
            );
            break;
        }
    }
    let (flags, payload) = clipboard::request();
    c.send(&ClientMessage::ExtendedCutText { flags, payload })
        .unwrap();
    loop {
        if let ServerEvent::ExtendedCutText { flags, payload } = c.read_event().unwrap() {
            assert_eq!(
                clipboard::parse(flags, &payload, 1 << 20),
                clipboard::ExtClipboard::Provide {
                    text: Some("from the guest ✓".into())
                }
            );
            break;
        }
    }
}

/// Reads extended clipboard messages until one that is not the caps.
fn next_ext_clipboard(c: &mut Client) -> clipboard::ExtClipboard {
    loop {
        if let ServerEvent::ExtendedCutText { flags, payload } = c.read_event().unwrap() {
            let m = clipboard::parse(flags, &payload, 1 << 20);
            if !matches!(m, clipboard::ExtClipboard::Caps { .. }) {
                return m;
            }
        }
    }
}

#[test]
fn a_client_that_comes_later_hears_of_the_clipboard_at_once() {
    let h = Harness::new(32, 32);
    h.server.set_clipboard("copied before you came");
    let mut c = h.connect();
    c.set_encodings(&[number::RAW, number::EXTENDED_CLIPBOARD])
        .unwrap();
    c.request(false).unwrap();
    assert_eq!(
        next_ext_clipboard(&mut c),
        clipboard::ExtClipboard::Notify {
            formats: clipboard::TEXT
        }
    );
    let (flags, payload) = clipboard::request();
    c.send(&ClientMessage::ExtendedCutText { flags, payload })
        .unwrap();
    assert_eq!(
        next_ext_clipboard(&mut c),
        clipboard::ExtClipboard::Provide {
            text: Some("copied before you came".into())
        }
    );
}

#[test]
fn plain_server_cut_text_for_old_clients() {
    let h = Harness::new(32, 32);
    let mut c = h.connect();
    c.update(false).unwrap();
    h.server.set_clipboard("plain");
    loop {
        if let ServerEvent::CutText(t) = c.read_event().unwrap() {
            assert_eq!(t, "plain");
            break;
        }
    }
}

#[test]
fn resize_reaches_clients_that_support_it() {
    let h = Harness::new(64, 64);
    let mut ext = h.connect();
    ext.set_encodings(&[number::RAW, number::EXTENDED_DESKTOP_SIZE])
        .unwrap();
    ext.update(false).unwrap();
    let mut old = h.connect();
    old.set_encodings(&[number::RAW, number::DESKTOP_SIZE])
        .unwrap();
    old.update(false).unwrap();
    h.surface.resize(150, 90);
    rfb_support::paint(&h.surface, 3);
    for c in [&mut ext, &mut old] {
        c.update(true).unwrap();
        h.assert_matches(c);
    }
}

#[test]
fn cursor_shape_is_sent() {
    let h = Harness::new(64, 64);
    h.surface.set_cursor(Some(display::surface::Cursor {
        width: 9,
        height: 3,
        hot_x: 1,
        hot_y: 2,
        pixels: vec![0xff00_ff00; 27],
    }));
    let mut c = h.connect();
    c.set_encodings(&[number::RAW, number::CURSOR]).unwrap();
    c.update(false).unwrap();
    assert_eq!(c.cursor, Some((1, 2, 9, 3)));
}

#[test]
fn update_latency_is_low() {
    let h = Harness::new(640, 480);
    let mut c = h.connect();
    c.update(false).unwrap();
    let mut worst = Duration::ZERO;
    for i in 0..20u32 {
        c.request(true).unwrap();
        // Let the request reach the server and the writer park.
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        h.surface.fill_rect(Rect::new(10, 10, 16, 16), i);
        c.next_update().unwrap();
        worst = worst.max(t.elapsed());
    }
    println!("worst change-to-client latency: {worst:?}");
    assert!(worst < Duration::from_millis(50), "{worst:?}");
}

#[test]
fn first_frame_is_fast() {
    let h = Harness::new(1920, 1080);
    let t = Instant::now();
    let mut c = h.connect();
    c.update(false).unwrap();
    println!("first full 1080p Raw frame after {:?}", t.elapsed());
    h.assert_matches(&c);
}

#[test]
fn shutdown_disconnects_clients_and_frees_the_port() {
    let mut h = Harness::new(32, 32);
    let addr = h.addr();
    let mut c = h.connect();
    c.update(false).unwrap();
    h.server.shutdown();
    let mut buf = [0u8; 1];
    c.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(matches!(c.stream().read(&mut buf), Ok(0) | Err(_)));
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn update_rate_is_capped_per_client() {
    let h = Harness::with(64, 64, |c| c.max_fps = 10);
    let mut c = h.connect();
    c.set_encodings(&[number::RAW, number::CONTINUOUS_UPDATES])
        .unwrap();
    c.update(false).unwrap();
    c.send(&ClientMessage::EnableContinuousUpdates {
        enable: true,
        x: 0,
        y: 0,
        w: 64,
        h: 64,
    })
    .unwrap();
    let surface = std::sync::Arc::clone(&h.surface);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                surface.fill_rect(Rect::new(0, 0, 8, 8), i);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    c.stream()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut updates = 0;
    while start.elapsed() < Duration::from_secs(1) {
        match c.read_event() {
            Ok(ServerEvent::Update(_)) => updates += 1,
            Ok(_) | Err(ClientError::Io(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.join().unwrap();
    // ~500 changes in that second; at 10 updates/s the client sees about 10.
    assert!((5..=13).contains(&updates), "{updates} updates in 1 s");
}

#[test]
fn connections_beyond_the_limit_are_closed() {
    let h = Harness::with(16, 16, |c| c.max_clients = 2);
    let mut a = h.connect();
    let mut b = h.connect();
    a.update(false).unwrap();
    b.update(false).unwrap();
    assert!(Client::connect(h.addr(), &ClientOptions::default()).is_err());
    drop(a);
    // The slot frees once the session has ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(mut c) = Client::connect(h.addr(), &ClientOptions::default()) {
            c.update(false).unwrap();
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn client_that_stops_reading_is_dropped_and_blocks_nobody() {
    let h = Harness::with(1920, 1080, |c| c.write_timeout = Duration::from_millis(500));
    let mut good = h.connect();
    good.update(false).unwrap();
    let mut stuck = h.connect();
    stuck
        .set_encodings(&[number::RAW, number::CONTINUOUS_UPDATES])
        .unwrap();
    stuck
        .send(&ClientMessage::EnableContinuousUpdates {
            enable: true,
            x: 0,
            y: 0,
            w: 1920,
            h: 1080,
        })
        .unwrap();
    // `stuck` never reads again. Full-screen changes fill its socket within a few frames.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seed = 2;
    while h.server.client_count() > 1 {
        assert!(Instant::now() < deadline, "stuck client never dropped");
        let t = Instant::now();
        rfb_support::paint(&h.surface, seed);
        seed += 1;
        // The producer is never held up by the stuck client.
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        good.update(true).unwrap();
    }
    h.assert_matches(&good);
    drop(stuck);
}

#[test]
fn set_desktop_size_is_answered_prohibited_and_bell_rings() {
    let h = Harness::new(80, 60);
    let mut c = h.connect();
    c.set_encodings(&[number::RAW, number::EXTENDED_DESKTOP_SIZE])
        .unwrap();
    c.update(false).unwrap();
    c.send(&ClientMessage::SetDesktopSize {
        w: 1024,
        h: 768,
        screens: vec![display::rfb::protocol::Screen {
            id: 0,
            x: 0,
            y: 0,
            w: 1024,
            h: 768,
            flags: 0,
        }],
    })
    .unwrap();
    let rects = c.next_update().unwrap();
    // x = 1: client-initiated; y = 1: prohibited; the size stays.
    assert_eq!(
        rects,
        vec![(Rect::new(1, 1, 80, 60), number::EXTENDED_DESKTOP_SIZE)]
    );
    assert_eq!((c.fb.width, c.fb.height), (80, 60));
    h.server.bell();
    assert_eq!(c.read_event().unwrap(), ServerEvent::Bell);
}
