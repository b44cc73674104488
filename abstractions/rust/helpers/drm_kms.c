// SPDX-License-Identifier: GPL-2.0

#include <drm/drm_atomic.h>

#ifdef CONFIG_RUST_DRM_KMS

__rust_helper struct drm_crtc_state *
rust_helper_drm_atomic_get_new_crtc_state(const struct drm_atomic_commit *state,
					  struct drm_crtc *crtc)
{
	return drm_atomic_get_new_crtc_state(state, crtc);
}

__rust_helper struct drm_plane_state *
rust_helper_drm_atomic_get_old_plane_state(const struct drm_atomic_commit *state,
					   struct drm_plane *plane)
{
	return drm_atomic_get_old_plane_state(state, plane);
}

__rust_helper struct drm_plane_state *
rust_helper_drm_atomic_get_new_plane_state(const struct drm_atomic_commit *state,
					   struct drm_plane *plane)
{
	return drm_atomic_get_new_plane_state(state, plane);
}

__rust_helper bool
rust_helper_drm_atomic_crtc_needs_modeset(const struct drm_crtc_state *state)
{
	return drm_atomic_crtc_needs_modeset(state);
}

#endif
