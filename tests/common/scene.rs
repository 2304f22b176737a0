//! A road scene for plate reading: vehicles with drawn plates (GStreamer's text
//! overlay) driving across a 1280x720 frame, encoded as a video the daemon's file
//! source loops.

use std::path::{Path, PathBuf};

use super::{encode_video, tool};

pub const W: usize = 1280;
pub const H: usize = 720;
pub const FPS: usize = 10;
/// One pass of the scene, seconds; the daemon's file source loops it.
pub const PASS_S: usize = 16;
pub const PLATE_W: usize = 300;
pub const PLATE_H: usize = 80;

/// A line of text for [`draw`]: the text, its font, and its vertical and
/// horizontal alignment (GStreamer's text overlay's names).
pub struct Text<'a>(pub &'a str, pub &'a str, pub &'a str, pub &'a str);

/// Dark `texts` on a white `width`x`height` picture, written to `out` as a JPEG
/// or, with `jpeg` false, as packed RGB.
pub fn draw(out: &Path, width: usize, height: usize, texts: &[Text], jpeg: bool) {
    let mut args: Vec<String> = ["-q", "videotestsrc", "pattern=white", "num-buffers=1", "!"]
        .map(String::from)
        .into();
    args.push(format!("video/x-raw,width={width},height={height}"));
    for Text(text, font, valign, halign) in texts {
        args.extend([
            "!".into(),
            "textoverlay".into(),
            format!("text={text}"),
            format!("font-desc={font}"),
            format!("valignment={valign}"),
            format!("halignment={halign}"),
            "color=0xff101010".into(),
            "shaded-background=false".into(),
        ]);
    }
    let encode = if jpeg {
        "jpegenc"
    } else {
        "video/x-raw,format=RGB"
    };
    args.extend(["!", "videoconvert", "!", encode, "!", "filesink"].map(String::from));
    args.push(format!("location={}", out.display()));
    let status = std::process::Command::new(tool("gst-launch-1.0"))
        .args(&args)
        .status()
        .unwrap();
    assert!(status.success());
}

/// `text` in dark bold letters on a white plate with a dark rim, as packed RGB.
pub fn plate_still(dir: &Path, text: &str) -> Vec<u8> {
    let raw = dir.join(format!("{text}.rgb"));
    let font = "Sans Bold 36";
    draw(
        &raw,
        PLATE_W,
        PLATE_H,
        &[Text(text, font, "center", "center")],
        false,
    );
    let mut rgb = std::fs::read(&raw).unwrap();
    assert_eq!(rgb.len(), PLATE_W * PLATE_H * 3);
    for y in 0..PLATE_H {
        for x in 0..PLATE_W {
            if x < 4 || y < 4 || x >= PLATE_W - 4 || y >= PLATE_H - 4 {
                let i = (y * PLATE_W + x) * 3;
                rgb[i..i + 3].copy_from_slice(&[30, 30, 30]);
            }
        }
    }
    rgb
}

/// Where a vehicle is at time `t` (seconds): the left edge of its body, pixels.
/// The first drives left to right from 1 s to 6 s, the second right to left from
/// 8 s to 13 s; the road is empty otherwise.
pub fn vehicles_at(t: f64) -> Vec<(usize, f64)> {
    let span = (W - 460) as f64;
    let mut out = Vec::new();
    if (1.0..6.0).contains(&t) {
        out.push((0, 20.0 + span * (t - 1.0) / 5.0));
    }
    if (8.0..13.0).contains(&t) {
        out.push((1, 20.0 + span * (13.0 - t) / 5.0));
    }
    out
}

/// A road, and the vehicles: a body with its plate.
pub fn road_frame(t: f64, plates: &[Vec<u8>]) -> Vec<u8> {
    let mut rgb = vec![0u8; W * H * 3];
    for y in 0..H {
        let v = (70 + y * 50 / H) as u8;
        for x in 0..W {
            let i = (y * W + x) * 3;
            rgb[i..i + 3].copy_from_slice(&[v, v, v + 5]);
        }
    }
    for (n, left) in vehicles_at(t) {
        let (bx, by, bw, bh) = (left as usize, 260, 420, 280);
        for y in by..by + bh {
            let row = (y * W + bx) * 3;
            for px in rgb[row..row + bw * 3].chunks_mut(3) {
                px.copy_from_slice(if n == 0 {
                    &[40, 60, 140]
                } else {
                    &[150, 40, 40]
                });
            }
        }
        let (px, py) = (bx + (bw - PLATE_W) / 2, by + bh - PLATE_H - 30);
        for y in 0..PLATE_H {
            let src = &plates[n][y * PLATE_W * 3..(y + 1) * PLATE_W * 3];
            let at = ((py + y) * W + px) * 3;
            rgb[at..at + PLATE_W * 3].copy_from_slice(src);
        }
    }
    rgb
}

/// The scene as H.264 in MP4: the first plate left to right from 1 s to 6 s, the
/// second right to left from 8 s to 13 s, one pass of `PASS_S` seconds.
pub fn road_video(path: &Path, texts: [&str; 2]) {
    let dir = path.parent().unwrap();
    let plates = [plate_still(dir, texts[0]), plate_still(dir, texts[1])];
    encode_video(path, (W, H, FPS), PASS_S * FPS, |i| {
        road_frame(i as f64 / FPS as f64, &plates)
    });
}

/// The plate development set (`EDGECAM_TEST_PLATES`, else `../shared/data/plates-dev`
/// beside the repository), whose real photographs tests may read but never copy.
/// `None` when it is not on this machine: the tests that need it say so and stop.
pub fn plates_dev() -> Option<PathBuf> {
    let dir = std::env::var_os("EDGECAM_TEST_PLATES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/plates-dev"));
    if dir.join("labels.tsv").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: no plate development set at {} (set EDGECAM_TEST_PLATES)",
            dir.display()
        );
        None
    }
}

/// RGB pixels of a JPEG.
pub fn decode_jpeg(path: &Path) -> (usize, usize, Vec<u8>) {
    let mut d =
        jpeg_decoder::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let pixels = d.decode().unwrap();
    let info = d.info().unwrap();
    assert_eq!(info.pixel_format, jpeg_decoder::PixelFormat::RGB24);
    (info.width as usize, info.height as usize, pixels)
}

/// A real car photograph (600x387, plate BS47040) sliding left to right across
/// a grey 1280x720 road for four seconds, then five seconds of empty road (more
/// than `plates.track_timeout`): one vehicle per pass of the looping file.
pub fn real_car_video(photo: &Path, path: &Path) {
    real_car_video_timed(photo, path, 4, 5);
}

/// As [`real_car_video`], the car in view for `in_view` seconds, then `empty`
/// seconds of empty road.
pub fn real_car_video_timed(photo: &Path, path: &Path, in_view: usize, empty: usize) {
    real_car_passes(photo, path, in_view, empty, &[&[]]);
}

/// As [`real_car_video_timed`], one pass after another; in each pass the parts of
/// the photograph given for it (`[x, y, width, height]`: its plate, say) are
/// painted over in dark grey, as a plate hidden by dirt or a tow bar.
pub fn real_car_passes(
    photo: &Path,
    path: &Path,
    in_view: usize,
    empty: usize,
    passes: &[&[[usize; 4]]],
) {
    const CW: usize = 1280;
    const CH: usize = 720;
    const CFPS: usize = 10;
    let (w, h, car) = decode_jpeg(photo);
    assert!(w < CW && h < CH, "{w}x{h}");
    let pass_frames = (in_view + empty) * CFPS;
    let covered: Vec<Vec<u8>> = passes
        .iter()
        .map(|covers| {
            let mut car = car.clone();
            for &[cx, cy, cw, ch] in covers.iter() {
                for y in cy..(cy + ch).min(h) {
                    for x in cx..(cx + cw).min(w) {
                        car[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[45, 45, 45]);
                    }
                }
            }
            car
        })
        .collect();
    encode_video(path, (CW, CH, CFPS), passes.len() * pass_frames, |i| {
        let (pass, i) = (i / pass_frames, i % pass_frames);
        let car = &covered[pass];
        let mut rgb = vec![110u8; CW * CH * 3];
        if i < in_view * CFPS {
            let x0 = (CW - w) * i / (in_view * CFPS - 1);
            let y0 = (CH - h) / 2;
            for y in 0..h {
                let dst = ((y0 + y) * CW + x0) * 3;
                rgb[dst..dst + w * 3].copy_from_slice(&car[y * w * 3..(y + 1) * w * 3]);
            }
        }
        rgb
    });
}
