//! Resizing a guest's display as a VNC client would.
//!
//! QEMU's display devices learn a new size only from a user interface (a window resized, a VNC
//! client's `SetDesktopSize`); there is no QMP command for it. So each boot gets a VNC server
//! on a unix socket (`-vnc unix:...`, no authentication), and [`resize`] speaks just enough of
//! the RFB protocol (RFC 6143, with the ExtendedDesktopSize extension) to ask for a size.
//! QEMU hands the size to virtio-gpu, which sets `VIRTIO_GPU_EVENT_DISPLAY` and raises a
//! configuration interrupt once its driver has set it up.
//!
//! The exchange (all integers big-endian): the server's version, ours (3.8); one security type
//! offered (1, none), chosen; the security result (0); `ClientInit` (shared); `ServerInit`
//! (size, pixel format, name: ignored); then `SetDesktopSize` (type 251) with one screen, and
//! its answer, an ExtendedDesktopSize rectangle whose `y` is the status (4: forwarded to the
//! display; 3: the display cannot be resized). The answer must be read before closing: QEMU
//! may otherwise see the hang-up first and drop the request.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

/// `SetDesktopSize`, a client message of the ExtendedDesktopSize extension.
const SET_DESKTOP_SIZE: u8 = 251;
/// The ExtendedDesktopSize pseudo-encoding of the server's answer.
const EXTENDED_DESKTOP_SIZE: i32 = -308;
/// The status of an answer that says the request went to the display.
const FORWARDED: u16 = 4;

fn read_exact<const N: usize>(s: &mut UnixStream, what: &str) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    s.read_exact(&mut b)
        .with_context(|| format!("VNC: reading the server's {what}"))?;
    Ok(b)
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Connects to the VNC server at `socket` without authentication, up to `ServerInit`.
fn connect(socket: &Path) -> Result<UnixStream> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("VNC: connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let version = read_exact::<12>(&mut s, "version")?;
    ensure!(
        version.starts_with(b"RFB 003."),
        "VNC: not an RFB server (it said {:?})",
        String::from_utf8_lossy(&version)
    );
    s.write_all(b"RFB 003.008\n")?;
    let [count] = read_exact::<1>(&mut s, "security type count")?;
    let mut types = vec![0u8; usize::from(count)];
    s.read_exact(&mut types)
        .context("VNC: reading the security types")?;
    ensure!(
        types.contains(&1),
        "VNC: the server wants authentication (security types {types:?}); the socket is the boot's own and should need none"
    );
    s.write_all(&[1])?;
    let result = read_exact::<4>(&mut s, "security result")?;
    ensure!(
        u32_at(&result, 0) == 0,
        "VNC: the server refused the client"
    );
    s.write_all(&[1])?; // ClientInit: shared
    let init = read_exact::<24>(&mut s, "ServerInit")?;
    let mut name = vec![0u8; u32_at(&init, 20) as usize];
    s.read_exact(&mut name)
        .context("VNC: reading the desktop name")?;
    Ok(s)
}

/// The `SetDesktopSize` message for one screen of `width` x `height`.
fn set_desktop_size(width: u16, height: u16) -> Vec<u8> {
    let mut m = vec![SET_DESKTOP_SIZE, 0];
    m.extend(width.to_be_bytes());
    m.extend(height.to_be_bytes());
    m.extend([1, 0]); // one screen, padding
    m.extend(0u32.to_be_bytes()); // screen id
    m.extend([0u8; 4]); // x, y
    m.extend(width.to_be_bytes());
    m.extend(height.to_be_bytes());
    m.extend(0u32.to_be_bytes()); // flags
    m
}

/// The status of the server's answer to `SetDesktopSize`: a `FramebufferUpdate` of one
/// ExtendedDesktopSize rectangle (`x` 1: the answer to this client; `y` the status).
fn answer_status(header: &[u8; 16]) -> Result<u16> {
    let encoding = i32::from_be_bytes([header[12], header[13], header[14], header[15]]);
    ensure!(
        header[0] == 0 && u16_at(header, 2) == 1 && encoding == EXTENDED_DESKTOP_SIZE,
        "VNC: unexpected answer to SetDesktopSize: {header:02x?}"
    );
    Ok(u16_at(header, 6))
}

/// Asks the display behind the VNC server at `socket` to become `width` x `height`.
pub fn resize(socket: &Path, width: u16, height: u16) -> Result<()> {
    let mut s = connect(socket)?;
    s.write_all(&set_desktop_size(width, height))?;
    let header = read_exact::<16>(&mut s, "answer to SetDesktopSize")?;
    let status = answer_status(&header)?;
    // The rest of the rectangle: the screen count and its one screen.
    let _ = read_exact::<20>(&mut s, "screen layout")?;
    if status != FORWARDED {
        bail!(
            "VNC: the display was not resized to {width}x{height} (status {status}; 3 means the display device cannot be resized)"
        );
    }
    Ok(())
}

/// Reads `WxH`.
pub fn parse_size(s: &str) -> Result<(u16, u16)> {
    let (w, h) = s
        .trim()
        .split_once('x')
        .with_context(|| format!("not a size: {s:?}"))?;
    Ok((w.parse()?, h.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_desktop_size_layout() {
        let m = set_desktop_size(800, 600);
        assert_eq!(m.len(), 24);
        assert_eq!(&m[..8], &[251, 0, 0x03, 0x20, 0x02, 0x58, 1, 0]);
        assert_eq!(&m[16..20], &[0x03, 0x20, 0x02, 0x58]);
    }

    #[test]
    fn answer_statuses() {
        let mut h = [0u8, 0, 0, 1, 0, 1, 0, 4, 0, 0, 0, 0, 0xff, 0xff, 0xfe, 0xcc];
        assert_eq!(answer_status(&h).unwrap(), 4);
        h[7] = 3;
        assert_eq!(answer_status(&h).unwrap(), 3);
        h[15] = 0; // another encoding
        assert!(answer_status(&h).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("800x600\n").unwrap(), (800, 600));
        assert!(parse_size("800").is_err());
        assert!(parse_size("x600").is_err());
    }
}
