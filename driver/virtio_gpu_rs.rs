// SPDX-License-Identifier: GPL-2.0-only

//! virtio-gpu DRM driver in Rust.
//!
//! This is the module skeleton: it proves that `driver/` is wired into the
//! kernel build (Kconfig `DRM_VIRTIO_GPU_RS`, module `virtio_gpu_rs`) and that
//! the module loads. The device driver itself (virtqueues, GEM in `gem/`,
//! the fence scheduler in `sched/`, KMS) is added on top of it.

use kernel::prelude::*;

module! {
    type: VirtioGpuRs,
    name: "virtio_gpu_rs",
    authors: ["virtgpu-rs developers"],
    description: "virtio-gpu DRM driver (Rust)",
    license: "GPL",
}

struct VirtioGpuRs;

impl kernel::Module for VirtioGpuRs {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("module skeleton loaded, no device binding yet\n");
        Ok(VirtioGpuRs)
    }
}
