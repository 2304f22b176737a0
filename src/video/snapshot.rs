//! Snapshots: a JPEG of an analytics frame, whole or cropped (a plate, a person),
//! for events and for upload requests.

use super::frames::Frame;

/// A rectangle of a frame, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the frame holds {found} bytes, expected {expected} for {width}x{height} RGB")]
    FrameSize {
        found: usize,
        expected: usize,
        width: u32,
        height: u32,
    },
    #[error("the crop {crop:?} is empty or outside the {width}x{height} frame")]
    Crop { crop: Crop, width: u32, height: u32 },
    #[error("a JPEG side is at most 65535 pixels, found {width}x{height}")]
    TooLarge { width: u32, height: u32 },
    #[error("cannot encode the JPEG: {0}")]
    Encode(String),
}

/// Encodes `frame` (or the `crop` of it) as JPEG at `quality` (1-100).
pub fn jpeg(frame: &Frame, crop: Option<Crop>, quality: u8) -> Result<Vec<u8>, SnapshotError> {
    let (w, h) = (frame.width, frame.height);
    let expected = w as usize * h as usize * 3;
    if frame.rgb.len() != expected {
        return Err(SnapshotError::FrameSize {
            found: frame.rgb.len(),
            expected,
            width: w,
            height: h,
        });
    }
    let crop = crop.unwrap_or(Crop {
        x: 0,
        y: 0,
        width: w,
        height: h,
    });
    let inside = crop.width > 0
        && crop.height > 0
        && crop.x.checked_add(crop.width).is_some_and(|r| r <= w)
        && crop.y.checked_add(crop.height).is_some_and(|b| b <= h);
    if !inside {
        return Err(SnapshotError::Crop {
            crop,
            width: w,
            height: h,
        });
    }
    let (Ok(cw), Ok(ch)) = (u16::try_from(crop.width), u16::try_from(crop.height)) else {
        return Err(SnapshotError::TooLarge {
            width: crop.width,
            height: crop.height,
        });
    };
    let row = w as usize * 3;
    let mut pixels = Vec::with_capacity(cw as usize * ch as usize * 3);
    for y in crop.y..crop.y + crop.height {
        let start = y as usize * row + crop.x as usize * 3;
        pixels.extend_from_slice(&frame.rgb[start..start + crop.width as usize * 3]);
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(&pixels, cw, ch, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    /// Left half red, right half blue.
    fn frame(width: u32, height: u32) -> Frame {
        let mut rgb = Vec::new();
        for _ in 0..height {
            for x in 0..width {
                rgb.extend_from_slice(if x < width / 2 {
                    &[230, 20, 20]
                } else {
                    &[20, 20, 230]
                });
            }
        }
        Frame {
            width,
            height,
            rgb,
            captured_at: SystemTime::now(),
        }
    }

    fn decode(jpeg: &[u8]) -> (u16, u16, Vec<u8>) {
        let mut d = jpeg_decoder::Decoder::new(jpeg);
        let pixels = d.decode().unwrap();
        let info = d.info().unwrap();
        (info.width, info.height, pixels)
    }

    #[test]
    fn a_whole_frame_decodes_back_to_its_size_and_colours() {
        let f = frame(64, 48);
        let (w, h, px) = decode(&jpeg(&f, None, 90).unwrap());
        assert_eq!((w, h), (64, 48));
        let left = &px[(10 * 64 + 5) * 3..][..3];
        let right = &px[(10 * 64 + 60) * 3..][..3];
        assert!(left[0] > 180 && left[2] < 80, "{left:?}");
        assert!(right[2] > 180 && right[0] < 80, "{right:?}");
    }

    #[test]
    fn a_crop_holds_only_its_rectangle() {
        let f = frame(64, 48);
        let crop = Crop {
            x: 40,
            y: 8,
            width: 16,
            height: 8,
        };
        let (w, h, px) = decode(&jpeg(&f, Some(crop), 90).unwrap());
        assert_eq!((w, h), (16, 8));
        assert!(px.chunks(3).all(|p| p[2] > 150 && p[0] < 100), "all blue");
    }

    #[test]
    fn a_crop_outside_the_frame_or_a_short_buffer_is_an_error() {
        let f = frame(64, 48);
        for crop in [
            Crop {
                x: 60,
                y: 0,
                width: 8,
                height: 8,
            },
            Crop {
                x: 0,
                y: 0,
                width: 0,
                height: 8,
            },
            Crop {
                x: u32::MAX,
                y: 0,
                width: 2,
                height: 2,
            },
        ] {
            assert!(matches!(
                jpeg(&f, Some(crop), 80),
                Err(SnapshotError::Crop { .. })
            ));
        }
        let mut short = f.clone();
        short.rgb.pop();
        assert!(matches!(
            jpeg(&short, None, 80),
            Err(SnapshotError::FrameSize { .. })
        ));
    }
}
