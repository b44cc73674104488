//! The test pattern shown by the guest's `drm-render` program.
//!
//! The guest draws it into a dumb buffer; xtask renders the same pattern on the
//! host and compares it with QEMU's `screendump`. Keeping the definition in one
//! crate means the two sides cannot drift apart.
//!
//! Layout, for a `w` x `h` frame:
//! - the top two thirds hold [`BARS`], seven vertical colour bars of equal width
//!   (the last one takes the rounding remainder);
//! - the bottom third is [`BACKGROUND`] with a label (`virtgpu-rs <arch>`) in
//!   [`INK`], drawn with a 5x7 pixel font scaled by [`SCALE`];
//! - below the label, the frame counter, inside [`counter_box`], which changes
//!   every frame and is therefore excluded from the comparison.

#![forbid(unsafe_code)]

/// An RGB colour.
pub type Rgb = [u8; 3];

/// The colour bars, left to right: white, yellow, cyan, green, magenta, red, blue.
pub const BARS: [Rgb; 7] = [
    [0xff, 0xff, 0xff],
    [0xff, 0xff, 0x00],
    [0x00, 0xff, 0xff],
    [0x00, 0xff, 0x00],
    [0xff, 0x00, 0xff],
    [0xff, 0x00, 0x00],
    [0x00, 0x00, 0xff],
];

/// Background of the lower third.
pub const BACKGROUND: Rgb = [0x20, 0x28, 0x40];

/// Colour of the label and the counter.
pub const INK: Rgb = [0xf0, 0xf0, 0xf0];

/// Scale factor of the 5x7 font (one font pixel is `SCALE` x `SCALE` pixels).
pub const SCALE: u32 = 6;

const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;
/// Horizontal advance per character, in font pixels (glyph plus one column of space).
const ADVANCE: u32 = GLYPH_W + 1;
/// Digits in the frame counter.
pub const COUNTER_DIGITS: usize = 6;

/// A rectangle: `x`, `y`, width, height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    /// Whether the point lies inside the rectangle.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        x >= self.x && y >= self.y && x - self.x < self.w && y - self.y < self.h
    }
}

/// The 5x7 glyph for `c`, one `u8` per row, bit 4 is the leftmost column.
/// Characters without a glyph are drawn blank.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e],
        '1' => [0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e],
        '2' => [0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f],
        '3' => [0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e],
        '4' => [0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02],
        '5' => [0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e],
        '6' => [0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e],
        '7' => [0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e],
        '9' => [0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c],
        'a' => [0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f],
        'g' => [0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e],
        'i' => [0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e],
        'm' => [0x00, 0x00, 0x1a, 0x15, 0x15, 0x11, 0x11],
        'p' => [0x00, 0x00, 0x1e, 0x11, 0x1e, 0x10, 0x10],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0e, 0x10, 0x0e, 0x01, 0x1e],
        't' => [0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04],
        'x' => [0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11],
        '_' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f],
        '-' => [0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00],
        _ => [0; 7],
    }
}

/// The label drawn for `arch`.
pub fn label(arch: &str) -> String {
    format!("virtgpu-rs {arch}")
}

/// Top-left corner of the label.
fn label_origin(h: u32) -> (u32, u32) {
    (SCALE * 4, h * 2 / 3 + SCALE * 3)
}

/// The region the frame counter may draw in.
pub fn counter_box(h: u32) -> Rect {
    let (x, y) = label_origin(h);
    Rect {
        x,
        y: y + (GLYPH_H + 3) * SCALE,
        w: ADVANCE * SCALE * COUNTER_DIGITS as u32,
        h: GLYPH_H * SCALE,
    }
}

/// Whether the font pixel for `text` drawn at `origin` covers `(x, y)`.
fn text_hit(text: &str, origin: (u32, u32), x: u32, y: u32) -> bool {
    if x < origin.0 || y < origin.1 {
        return false;
    }
    let (fx, fy) = ((x - origin.0) / SCALE, (y - origin.1) / SCALE);
    if fy >= GLYPH_H {
        return false;
    }
    let (index, col) = ((fx / ADVANCE) as usize, fx % ADVANCE);
    if col >= GLYPH_W {
        return false;
    }
    match text.chars().nth(index) {
        Some(c) => glyph(c)[fy as usize] & (0x10 >> col) != 0,
        None => false,
    }
}

/// The colour at `(x, y)` of the static part of the pattern (everything but
/// the counter) for a `w` x `h` frame of `arch`.
pub fn static_pixel(w: u32, h: u32, arch: &str, x: u32, y: u32) -> Rgb {
    if y < h * 2 / 3 {
        let bar_w = (w / BARS.len() as u32).max(1);
        let i = ((x / bar_w) as usize).min(BARS.len() - 1);
        return BARS[i];
    }
    if text_hit(&label(arch), label_origin(h), x, y) {
        INK
    } else {
        BACKGROUND
    }
}

/// The colour at `(x, y)` of the full pattern for frame number `frame`.
pub fn pixel(w: u32, h: u32, arch: &str, frame: u64, x: u32, y: u32) -> Rgb {
    let cb = counter_box(h);
    if cb.contains(x, y) {
        let digits = format!(
            "{:0width$}",
            frame % 10u64.pow(COUNTER_DIGITS as u32),
            width = COUNTER_DIGITS
        );
        return if text_hit(&digits, (cb.x, cb.y), x, y) {
            INK
        } else {
            BACKGROUND
        };
    }
    static_pixel(w, h, arch, x, y)
}

/// Differences between a captured frame and the expected static pattern.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Pixels compared (the counter box is left out).
    pub compared: u64,
    /// Pixels whose colour differs.
    pub mismatched: u64,
    /// The first few mismatches: `(x, y, got, expected)`.
    pub first: Vec<(u32, u32, Rgb, Rgb)>,
    /// Pixels in the counter box that show [`INK`] (a drawn counter has some).
    pub counter_ink: u64,
}

/// Compares `rgb` (`w * h` pixels, row-major, 3 bytes each) against the pattern.
pub fn compare(w: u32, h: u32, arch: &str, rgb: &[u8]) -> Comparison {
    let mut c = Comparison::default();
    let cb = counter_box(h);
    for y in 0..h {
        for x in 0..w {
            let i = ((y * w + x) * 3) as usize;
            let Some(px) = rgb.get(i..i + 3) else {
                c.mismatched += 1;
                continue;
            };
            let got = [px[0], px[1], px[2]];
            if cb.contains(x, y) {
                if got == INK {
                    c.counter_ink += 1;
                }
                continue;
            }
            c.compared += 1;
            let want = static_pixel(w, h, arch, x, y);
            if got != want {
                c.mismatched += 1;
                if c.first.len() < 8 {
                    c.first.push((x, y, got, want));
                }
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(w: u32, h: u32, arch: &str, frame: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&pixel(w, h, arch, frame, x, y));
            }
        }
        v
    }

    #[test]
    fn rendered_frame_matches_itself_for_any_counter() {
        let img = render(640, 480, "x86_64", 1234);
        let c = compare(640, 480, "x86_64", &img);
        assert_eq!(c.mismatched, 0);
        assert!(c.compared > 50_000);
        assert!(c.counter_ink > 0, "the counter must be drawn");
    }

    #[test]
    fn wrong_arch_label_is_detected() {
        let img = render(640, 480, "x86_64", 1);
        let c = compare(640, 480, "arm64", &img);
        assert!(c.mismatched > 0);
    }

    #[test]
    fn black_frame_is_detected() {
        let img = vec![0u8; 320 * 200 * 3];
        let c = compare(320, 200, "arm64", &img);
        assert_eq!(c.mismatched, c.compared);
    }

    #[test]
    fn short_buffer_counts_as_mismatch() {
        let c = compare(16, 16, "arm64", &[0u8; 10]);
        assert!(c.mismatched > 0);
    }

    #[test]
    fn bars_cover_top_two_thirds() {
        assert_eq!(static_pixel(700, 300, "a", 0, 0), BARS[0]);
        assert_eq!(static_pixel(700, 300, "a", 699, 199), BARS[6]);
        assert_eq!(static_pixel(700, 300, "a", 699, 299), BACKGROUND);
    }
}
