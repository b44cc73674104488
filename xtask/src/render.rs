//! Checking the captured scanout against the test pattern.

use std::path::Path;

use crate::report::Verdict;

use anyhow::{bail, Context, Result};

/// A decoded screendump.
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// RGB, 3 bytes per pixel, row-major.
    pub rgb: Vec<u8>,
}

/// Reads a PNG into RGB.
pub fn load_png(path: &Path) -> Result<Image> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let decoder = png::Decoder::new(std::io::BufReader::new(f));
    let mut reader = decoder.read_info().context("reading the PNG header")?;
    let size = reader.output_buffer_size().context("PNG too large")?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).context("decoding the PNG")?;
    buf.truncate(info.buffer_size());
    let rgb = match (info.color_type, info.bit_depth) {
        (png::ColorType::Rgb, png::BitDepth::Eight) => buf,
        (png::ColorType::Rgba, png::BitDepth::Eight) => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        (c, d) => bail!("unexpected PNG format {c:?}/{d:?}"),
    };
    Ok(Image {
        width: info.width,
        height: info.height,
        rgb,
    })
}

/// Compares `img` with the pattern for `arch` at the expected size.
pub fn check(img: &Image, arch: &str, expect: (u32, u32)) -> Verdict {
    if (img.width, img.height) != expect {
        return Verdict {
            ok: false,
            summary: format!(
                "the scanout is {}x{}, the guest set {}x{} (is the mode set on this head?)",
                img.width, img.height, expect.0, expect.1
            ),
        };
    }
    let c = virtgpu_pattern::compare(img.width, img.height, arch, &img.rgb);
    let black = img.rgb.iter().all(|&b| b == 0);
    if black {
        return Verdict {
            ok: false,
            summary: "the frame is black: nothing reached the scanout".into(),
        };
    }
    if c.mismatched > 0 || c.counter_ink == 0 {
        let first: Vec<String> = c
            .first
            .iter()
            .map(|(x, y, got, want)| format!("({x},{y}) got {got:02x?} want {want:02x?}"))
            .collect();
        return Verdict {
            ok: false,
            summary: format!(
                "{} of {} pixels differ from the pattern, counter pixels {}; first: {}",
                c.mismatched,
                c.compared,
                c.counter_ink,
                first.join(", ")
            ),
        };
    }
    Verdict {
        ok: true,
        summary: format!(
            "{}x{}: all {} pattern pixels match (7 colour bars, label \"{}\"), frame counter drawn ({} ink pixels)",
            img.width,
            img.height,
            c.compared,
            virtgpu_pattern::label(arch),
            c.counter_ink
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synth(w: u32, h: u32, arch: &str) -> Image {
        let mut rgb = Vec::new();
        for y in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(&virtgpu_pattern::pixel(w, h, arch, 42, x, y));
            }
        }
        Image {
            width: w,
            height: h,
            rgb,
        }
    }

    #[test]
    fn png_round_trip_and_check() {
        let img = synth(640, 480, "arm64");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("render.png");
        {
            let f = std::fs::File::create(&path).unwrap();
            let mut e = png::Encoder::new(f, 640, 480);
            e.set_color(png::ColorType::Rgb);
            e.set_depth(png::BitDepth::Eight);
            e.write_header()
                .unwrap()
                .write_image_data(&img.rgb)
                .unwrap();
        }
        let back = load_png(&path).unwrap();
        assert!(check(&back, "arm64", (640, 480)).ok);
        let v = check(&back, "x86_64", (640, 480));
        assert!(!v.ok && v.summary.contains("differ"), "{}", v.summary);
        assert!(!check(&back, "arm64", (1280, 800)).ok);
    }

    #[test]
    fn black_frame_fails_loudly() {
        let img = Image {
            width: 64,
            height: 64,
            rgb: vec![0; 64 * 64 * 3],
        };
        let v = check(&img, "x86_64", (64, 64));
        assert!(!v.ok);
        assert!(v.summary.contains("black"));
    }
}
