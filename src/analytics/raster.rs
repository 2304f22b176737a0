//! Pictures and masks, shared by the analytics: an RGB image owned or borrowed,
//! bilinear sampling, and a mask's dilation and connected regions.

/// An RGB image.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// Packed RGB.
    pub rgb: Vec<u8>,
}

impl Image {
    /// The same pixels, borrowed.
    pub fn view(&self) -> View<'_> {
        View {
            width: self.width,
            height: self.height,
            rgb: &self.rgb,
        }
    }

    /// Bilinear sample at (x, y) in pixels.
    pub(crate) fn sample(&self, x: f32, y: f32) -> [f32; 3] {
        self.view().sample(x, y)
    }
}

/// An RGB picture borrowed (a video frame's pixels, without a copy).
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub width: u32,
    pub height: u32,
    /// Packed RGB, `width * height * 3` bytes.
    pub rgb: &'a [u8],
}

impl View<'_> {
    fn px(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y.min(self.height - 1) * self.width + x.min(self.width - 1)) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Bilinear sample at (x, y) in pixels.
    pub(crate) fn sample(&self, x: f32, y: f32) -> [f32; 3] {
        let (x, y) = (x.max(0.0), y.max(0.0));
        let (x0, y0) = (x.floor() as u32, y.floor() as u32);
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let (a, b, c, d) = (
            self.px(x0, y0),
            self.px(x0 + 1, y0),
            self.px(x0, y0 + 1),
            self.px(x0 + 1, y0 + 1),
        );
        let mut out = [0f32; 3];
        for k in 0..3 {
            let top = a[k] as f32 * (1.0 - fx) + b[k] as f32 * fx;
            let bottom = c[k] as f32 * (1.0 - fx) + d[k] as f32 * fx;
            out[k] = top * (1.0 - fy) + bottom * fy;
        }
        out
    }
}

/// 3x3 dilation of a mask: joins the fragments of one thing (a person in the
/// foreground, a line of text in a probability map).
pub fn dilate(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let mut out = mask.to_vec();
    for y in 0..h {
        for x in 0..w {
            if !mask[y * w + x] {
                continue;
            }
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    out[ny * w + nx] = true;
                }
            }
        }
    }
    out
}

/// Connected regions (4-connected) of a mask, each as its pixel indices.
pub fn regions(mask: &[bool], w: usize, h: usize) -> Vec<Vec<usize>> {
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut pixels = Vec::new();
        while let Some(i) = stack.pop() {
            pixels.push(i);
            let (x, y) = (i % w, i / w);
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < w).then(|| i + 1),
                (y > 0).then(|| i - w),
                (y + 1 < h).then(|| i + w),
            ];
            for j in neighbours.into_iter().flatten() {
                if mask[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        out.push(pixels);
    }
    out
}
