//! The server through every pixel encoding it has (Hextile, ZRLE, Tight lossless), decoded
//! by `display::decode` in our test client, compared pixel for pixel with the surface in
//! every pixel format; then incremental updates and CopyRect mixed in.

mod rfb_support;

use display::client::{BodyDecoder, Client, ClientError, Framebuffer};
use display::decode::{DecodedFrame, Decoder};
use display::encoding::{Rect, new_encoder, number};
use display::pixel::PixelFormat;
use rfb_support::{Harness, formats};

/// Plugs `display::decode` into the test client for everything but Raw and CopyRect.
fn crate_decoders(pf: PixelFormat) -> BodyDecoder {
    let mut dec = Decoder::new(&pf);
    let mut cur = pf;
    Box::new(move |enc, rect, pf, r, fb: &mut Framebuffer| {
        if *pf != cur {
            dec.set_pixel_format(pf);
            cur = *pf;
        }
        let mut df = DecodedFrame::new(0, 0);
        df.width = fb.width;
        df.height = fb.height;
        std::mem::swap(&mut df.pixels, &mut fb.pixels);
        let mut r = r;
        let res = dec.decode_body(enc, rect, &mut r, &mut df);
        std::mem::swap(&mut df.pixels, &mut fb.pixels);
        res.map_err(|e| ClientError::Decode(e.to_string()))
    })
}

#[test]
fn every_encoding_every_pixel_format_is_exact() {
    let h = Harness::new(333, 201);
    for enc in [number::HEXTILE, number::ZRLE, number::TIGHT] {
        assert!(new_encoder(enc).is_some(), "encoding {enc} missing");
        for (name, pf) in formats() {
            let mut c: Client = h.connect();
            c.set_body_decoder(crate_decoders(PixelFormat::NATIVE));
            c.set_pixel_format(pf).unwrap();
            c.set_encodings(&[enc, number::COPY_RECT, number::RAW])
                .unwrap();
            let rects = c.update(false).unwrap();
            assert!(
                rects.iter().any(|(_, e)| *e == enc),
                "{enc} {name}: {rects:?}"
            );
            h.assert_matches(&c);
            // Small changes, a scroll, then a whole new picture, on the same zlib streams.
            h.surface.fill_rect(Rect::new(70, 30, 9, 16), 0x00aa_aaaa);
            c.update(true).unwrap();
            h.assert_matches(&c);
            h.surface.copy_rect(Rect::new(0, 16, 333, 185), 0, 0);
            c.update(true).unwrap();
            h.assert_matches(&c);
            rfb_support::paint(&h.surface, 11);
            c.update(true).unwrap();
            h.assert_matches(&c);
            rfb_support::paint(&h.surface, 1);
            c.update(true).unwrap();
            h.assert_matches(&c);
        }
    }
}
