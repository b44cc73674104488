//! What the guest programs share.

/// Kills what is left of the process group `pid` led (a program spawned
/// with `process_group(0)`), so helpers it left behind do not run on.
pub fn kill_group(pid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // Never signal -1 (every process) or 0 (our own group).
    if pgid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; `-pgid` names
        // the group the child led (it was spawned with `process_group(0)`),
        // which the caller is not in.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// The kernel log (`/dev/kmsg`), read from where it was opened on.
pub struct KernelLog(std::fs::File);

impl KernelLog {
    fn open_kmsg() -> Result<std::fs::File, String> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .map_err(|e| format!("cannot open /dev/kmsg: {e}"))
    }

    /// From the oldest record the kernel still has.
    pub fn from_start() -> Result<KernelLog, String> {
        Ok(KernelLog(Self::open_kmsg()?))
    }

    /// From now on: only records logged after this call are read.
    pub fn from_now() -> Result<KernelLog, String> {
        use std::io::{Seek, SeekFrom};
        let mut f = Self::open_kmsg()?;
        // Seeking /dev/kmsg to its end moves past every record.
        f.seek(SeekFrom::End(0))
            .map_err(|e| format!("cannot seek /dev/kmsg: {e}"))?;
        Ok(KernelLog(f))
    }

    /// The messages logged since the last call (the text after each record's `;`).
    pub fn new_messages(&mut self) -> Result<Vec<String>, String> {
        use std::io::Read;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    if let Some((_, msg)) = rec.split_once(';') {
                        out.push(msg.lines().next().unwrap_or("").to_string());
                    }
                }
                // EPIPE: records were overwritten meanwhile; the next read goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("cannot read /dev/kmsg: {e}")),
            }
        }
        Ok(out)
    }
}

/// Every message now in the kernel log (the text after each record's `;`).
pub fn kernel_log() -> Result<Vec<String>, String> {
    KernelLog::from_start()?.new_messages()
}

/// Runs `cmd` with `args` and waits for it; an error says what failed.
pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let st = std::process::Command::new(cmd)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd} {} failed: {st}", args.join(" ")))
    }
}

/// `DRM_IOCTL_VIRTGPU_GETPARAM`: `DRM_IOWR(DRM_COMMAND_BASE + 3, struct drm_virtgpu_getparam)`.
const VIRTGPU_GETPARAM: libc::c_ulong = 0xc010_6443;

/// `struct drm_virtgpu_getparam`.
#[repr(C)]
struct GetParam {
    param: u64,
    value: u64,
}

/// The virtgpu parameters `VIRTGPU_PARAM_*` by name, and two numbers no driver knows.
pub const VIRTGPU_PARAMS: &[(&str, u64)] = &[
    ("3D_FEATURES", 1),
    ("CAPSET_QUERY_FIX", 2),
    ("RESOURCE_BLOB", 3),
    ("HOST_VISIBLE", 4),
    ("CROSS_DEVICE", 5),
    ("CONTEXT_INIT", 6),
    ("SUPPORTED_CAPSET_IDs", 7),
    ("EXPLICIT_DEBUG_NAME", 8),
    ("BLOB_ALIGNMENT", 9),
    ("UNKNOWN_0", 0),
    ("UNKNOWN_10", 10),
    ("UNKNOWN_HIGH_BITS", 0x1_0000_0001),
];

/// What `DRM_IOCTL_VIRTGPU_GETPARAM` wrote for one parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamValue {
    /// The `int` the driver wrote.
    pub value: i32,
    /// Whether the driver wrote exactly 4 bytes, as C does (the next 4 kept their pattern).
    pub wrote_int: bool,
}

/// `DRM_IOCTL_VIRTGPU_GETPARAM` for `param`, the driver writing to the user pointer `value`.
fn getparam_ioctl(fd: std::os::fd::BorrowedFd<'_>, param: u64, value: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut arg = GetParam { param, value };
    // SAFETY: `arg` is a valid `struct drm_virtgpu_getparam` for the call; the kernel checks the
    // user pointer `value`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), VIRTGPU_GETPARAM, &mut arg) };
    os_result(r).map(drop)
}

/// Asks the virtgpu driver behind `fd` for parameter `param`.
pub fn virtgpu_getparam(
    fd: std::os::fd::BorrowedFd<'_>,
    param: u64,
) -> std::io::Result<ParamValue> {
    const PATTERN: u64 = 0xa5a5_a5a5_a5a5_a5a5;
    let mut out: u64 = PATTERN;
    // `out` is 8 writable bytes that outlive the call.
    getparam_ioctl(fd, param, std::ptr::addr_of_mut!(out) as u64)?;
    let bytes = out.to_ne_bytes();
    let value = i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let rest = [bytes[4], bytes[5], bytes[6], bytes[7]];
    Ok(ParamValue {
        value,
        wrote_int: rest == [0xa5; 4],
    })
}

/// `DRM_IOCTL_VIRTGPU_GETPARAM` with `value` pointing nowhere (address 8): must fail with
/// `EFAULT` for a known parameter.
pub fn virtgpu_getparam_bad_pointer(
    fd: std::os::fd::BorrowedFd<'_>,
    param: u64,
) -> std::io::Result<()> {
    getparam_ioctl(fd, param, 8)
}

/// An argument-less ioctl `_IO('d', nr)` on `fd`: for driver ioctl numbers the
/// driver does not define (an empty slot of its table, or past its end).
pub fn drm_raw_ioctl(fd: std::os::fd::BorrowedFd<'_>, nr: u8) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let cmd = (u32::from(b'd') << 8 | u32::from(nr)) as libc::c_ulong;
    // SAFETY: An `_IO` ioctl passes no argument the kernel would read or write.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd, 0) };
    os_result(r).map(drop)
}

/// `_IOC(dir, ty, nr, size_of::<T>())`: an ioctl number whose argument is a `T`, so that the
/// kernel copies exactly a `T`. `dir` is 1 for `_IOW`, 3 for `_IOWR`.
fn ioc<T>(dir: libc::c_ulong, ty: u8, nr: u8) -> libc::c_ulong {
    let size = std::mem::size_of::<T>() as libc::c_ulong;
    (dir << 30) | (size << 16) | (libc::c_ulong::from(ty) << 8) | libc::c_ulong::from(nr)
}

/// `_IOWR('d', nr, T)`: the number of the DRM ioctl `nr` that reads and writes a `T`.
fn drm_iowr<T>(nr: u8) -> libc::c_ulong {
    ioc::<T>(3, b'd', nr)
}

/// A libc call's result: the error in `errno` when it returned a negative value.
fn os_result(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `DRM_IOCTL_GEM_FLINK`, which `drm-ffi` does not wrap: a global name for the object of
/// `handle`.
pub fn gem_flink(fd: std::os::fd::BorrowedFd<'_>, handle: u32) -> std::io::Result<u32> {
    use drm_ffi::drm_sys::drm_gem_flink;
    use std::os::fd::AsRawFd;
    let mut arg = drm_gem_flink { handle, name: 0 };
    let cmd = drm_iowr::<drm_gem_flink>(0x0a);
    // SAFETY: `arg` is the ioctl's argument struct, writable for the call; it holds no pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd, std::ptr::addr_of_mut!(arg)) };
    os_result(r).map(|_| arg.name)
}

/// A dma-buf of `size` bytes (a page multiple) that no DRM driver exported: udmabuf's
/// (`/dev/udmabuf`, `CONFIG_UDMABUF`) over a sealed memfd. It is what another device's buffer
/// looks like to the virtio-gpu drivers' PRIME import.
pub fn foreign_dma_buf(size: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    /// `struct udmabuf_create` of include/uapi/linux/udmabuf.h.
    #[repr(C)]
    struct UdmabufCreate {
        memfd: u32,
        flags: u32,
        offset: u64,
        size: u64,
    }
    const _: () = assert!(std::mem::size_of::<UdmabufCreate>() == 24);
    /// `UDMABUF_FLAGS_CLOEXEC`.
    const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;
    let flags = libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC;
    // SAFETY: The name is a NUL-terminated string; the call takes no other pointer.
    let memfd = os_result(unsafe { libc::memfd_create(c"vrs-foreign".as_ptr(), flags) })?;
    // SAFETY: memfd_create succeeded, so `memfd` is a new descriptor nothing else owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
    let len =
        libc::off_t::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `memfd` is an open descriptor; the call takes no pointer.
    os_result(unsafe { libc::ftruncate(memfd.as_raw_fd(), len) })?;
    // udmabuf requires that the memfd cannot shrink under the buffer.
    // SAFETY: As above.
    os_result(unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) })?;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/udmabuf")?;
    let arg = UdmabufCreate {
        memfd: memfd.as_raw_fd() as u32,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset: 0,
        size,
    };
    // `_IOW('u', 0x42, struct udmabuf_create)`.
    let cmd = ioc::<UdmabufCreate>(1, b'u', 0x42);
    // SAFETY: `cmd` encodes the size of `UdmabufCreate`, so the kernel reads exactly `arg`, which
    // is valid for the call and holds no pointer.
    let buf = os_result(unsafe { libc::ioctl(dev.as_raw_fd(), cmd, &raw const arg) })?;
    // SAFETY: UDMABUF_CREATE succeeded and returned a new dma-buf descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(buf) })
}

pub mod kprobe;

/// The virtgpu ioctls past `GETPARAM`, with their argument structs as
/// `include/uapi/drm/virtgpu_drm.h` (7.3) lays them out.
pub mod virtgpu {
    use std::os::fd::{AsRawFd, BorrowedFd};

    /// `DRM_VIRTGPU_*` command numbers (added to `DRM_COMMAND_BASE`).
    pub const MAP: u8 = 0x01;
    pub const EXECBUFFER: u8 = 0x02;
    pub const RESOURCE_CREATE: u8 = 0x04;
    pub const RESOURCE_INFO: u8 = 0x05;
    pub const TRANSFER_FROM_HOST: u8 = 0x06;
    pub const TRANSFER_TO_HOST: u8 = 0x07;
    pub const WAIT: u8 = 0x08;
    pub const GET_CAPS: u8 = 0x09;
    pub const RESOURCE_CREATE_BLOB: u8 = 0x0a;
    pub const CONTEXT_INIT: u8 = 0x0b;

    /// `VIRTGPU_WAIT_NOWAIT`.
    pub const WAIT_NOWAIT: u32 = 1;

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct Map {
        pub offset: u64,
        pub handle: u32,
        pub pad: u32,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct Execbuffer {
        pub flags: u32,
        pub size: u32,
        pub command: u64,
        pub bo_handles: u64,
        pub num_bo_handles: u32,
        pub fence_fd: i32,
        pub ring_idx: u32,
        pub syncobj_stride: u32,
        pub num_in_syncobjs: u32,
        pub num_out_syncobjs: u32,
        pub in_syncobjs: u64,
        pub out_syncobjs: u64,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct ResourceCreate {
        pub target: u32,
        pub format: u32,
        pub bind: u32,
        pub width: u32,
        pub height: u32,
        pub depth: u32,
        pub array_size: u32,
        pub last_level: u32,
        pub nr_samples: u32,
        pub flags: u32,
        pub bo_handle: u32,
        pub res_handle: u32,
        pub size: u32,
        pub stride: u32,
    }

    impl ResourceCreate {
        /// A 2D texture (`PIPE_TEXTURE_2D`) of `width` x `height` B8G8R8X8 pixels in `size`
        /// bytes, as a driver without virgl accepts it.
        pub fn tex_2d(width: u32, height: u32, size: u32) -> Self {
            Self {
                target: 2,
                format: 2,
                bind: 2,
                width,
                height,
                depth: 1,
                array_size: 1,
                size,
                ..Self::default()
            }
        }
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct ResourceInfo {
        pub bo_handle: u32,
        pub res_handle: u32,
        pub size: u32,
        pub blob_mem: u32,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct Box3d {
        pub x: u32,
        pub y: u32,
        pub z: u32,
        pub w: u32,
        pub h: u32,
        pub d: u32,
    }

    /// `struct drm_virtgpu_3d_transfer_to_host`, and `_from_host` (the same layout).
    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct Transfer {
        pub bo_handle: u32,
        pub bx: Box3d,
        pub level: u32,
        pub offset: u32,
        pub stride: u32,
        pub layer_stride: u32,
    }

    impl Transfer {
        /// A transfer of the whole `width` x `height` 2D resource of object `handle`.
        pub fn whole(handle: u32, width: u32, height: u32) -> Self {
            Self {
                bo_handle: handle,
                bx: Box3d {
                    w: width,
                    h: height,
                    d: 1,
                    ..Default::default()
                },
                ..Default::default()
            }
        }
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct Wait {
        pub handle: u32,
        pub flags: u32,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct GetCaps {
        pub cap_set_id: u32,
        pub cap_set_ver: u32,
        pub addr: u64,
        pub size: u32,
        pub pad: u32,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct ResourceCreateBlob {
        pub blob_mem: u32,
        pub blob_flags: u32,
        pub bo_handle: u32,
        pub res_handle: u32,
        pub size: u64,
        pub pad: u32,
        pub cmd_size: u32,
        pub cmd: u64,
        pub blob_id: u64,
        pub blob_hints: u32,
        pub pad2: u32,
    }

    #[repr(C)]
    #[derive(Default, Clone, Copy, Debug)]
    pub struct ContextInit {
        pub num_params: u32,
        pub pad: u32,
        pub ctx_set_params: u64,
    }

    /// `DRM_IOWR(DRM_COMMAND_BASE + nr, T)` on `fd` with `arg`, which the driver may update.
    ///
    /// # Safety
    ///
    /// `T` must be the argument struct of command `nr`, and any user pointer in it valid for
    /// what the driver does with it.
    pub unsafe fn ioctl<T>(fd: BorrowedFd<'_>, nr: u8, arg: &mut T) -> std::io::Result<()> {
        // DRM_COMMAND_BASE is 0x40.
        let cmd = super::drm_iowr::<T>(0x40 + nr);
        // SAFETY: `arg` is a valid `T` for the call; the caller vouches for its pointers.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), cmd, std::ptr::from_mut(arg)) };
        super::os_result(r).map(drop)
    }

    /// [`ioctl`] for an argument struct without user pointers: every field is plain data, so
    /// any value is safe to pass.
    pub fn call<T: Plain>(fd: BorrowedFd<'_>, nr: u8, mut arg: T) -> std::io::Result<T> {
        // SAFETY: `T: Plain` holds no pointer. With another command's `nr` the kernel copies
        // at most `size_of::<T>()` bytes back (the size is part of the command number).
        unsafe { ioctl(fd, nr, &mut arg) }?;
        Ok(arg)
    }

    /// Argument structs with no user pointer in them.
    pub trait Plain {}
    impl Plain for Map {}
    impl Plain for ResourceCreate {}
    impl Plain for ResourceInfo {}
    impl Plain for Transfer {}
    impl Plain for Wait {}
}

/// A shared read-write mapping of `len` bytes of a DRM file at a fake offset (an object's);
/// unmapped when dropped.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` at `offset`, read-write and shared.
    pub fn new(fd: std::os::fd::BorrowedFd<'_>, len: usize, offset: u64) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        // SAFETY: A fresh mapping the kernel places; nothing else in this process uses the range,
        // which `Drop` unmaps.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The mapped bytes.
    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` bytes, read-write, for as long as `self` lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is this mapping, not used after this.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
