//! The character editor's photo canvas: the reference photo, the character mask tinted in the
//! character's colour, and everything outside the crop rectangle dimmed.
//!
//! Two renderers draw the same picture:
//! * **GPU** (eframe on wgpu, `cc.wgpu_render_state` is `Some`): an `egui_wgpu` paint callback
//!   runs `shaders/mask_overlay.wgsl`. Photo (`Rgba8Unorm`) and mask (`R8Unorm`) live as wgpu
//!   textures per character in a `GpuResources` value stored in the renderer's
//!   `callback_resources`; the callback's `prepare` uploads only what changed (a new photo
//!   `Arc`, a new `mask_rev`), so a brush stroke costs one R8 upload, not an RGBA rebuild.
//!   Photos and masks larger than the device's `max_texture_dimension_2d` are downscaled first.
//! * **CPU fallback** (glow, headless tests): the photo and a mask-coverage image as egui
//!   textures (at most [`CPU_MAX_TEXTURE_SIDE`] px a side), the mask drawn with the tint as
//!   vertex colour, plus one mesh of four dim rectangles around the crop.
//!
//! Each path keeps the textures of the [`MAX_CACHED_CHARACTERS`] most recently drawn characters;
//! [`MaskOverlay::forget`] drops one at once.
//!
//! Both composite in gamma space with premultiplied alpha, exactly like egui draws images, so
//! the GPU path looks like the fallback (a device test renders both and compares pixels).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};

use eframe::egui_wgpu;
use egui::{Color32, Rect};
use wgpu::util::DeviceExt as _;

/// The WGSL source, compiled into the binary.
const SHADER_SOURCE: &str = include_str!("../../shaders/mask_overlay.wgsl");

/// Longest side of the CPU fallback's textures (photo and mask coverage).
pub const CPU_MAX_TEXTURE_SIDE: u32 = 2048;

/// Characters whose textures stay cached (per path): the least recently drawn beyond this are
/// dropped, so a project with many 64 MP photos does not pin gigabytes of (video) memory.
pub const MAX_CACHED_CHARACTERS: usize = 4;

/// What to draw: the photo fills `rect` (caller already fitted aspect).
pub struct CanvasImage<'a> {
    /// Stable per character (character id).
    pub key: u64,
    /// Upright photo; re-uploaded when the `Arc` pointer changes.
    pub photo: &'a Arc<image::RgbaImage>,
    /// Same size as photo (if not, it is treated as empty).
    pub mask: &'a crate::imaging::Mask,
    /// The mask is re-uploaded when this differs from the cached one.
    pub mask_rev: u64,
}

/// How to draw it.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayStyle {
    /// Crop rectangle in normalised photo coords `[x0, y0, x1, y1]`.
    pub crop_uv: [f32; 4],
    /// Character colour.
    pub tint: Color32,
    /// 0..1, how strongly the mask is tinted.
    pub mask_opacity: f32,
    pub show_mask: bool,
    /// 0..1, darkening outside the crop.
    pub outside_crop_dim: f32,
}

impl Default for OverlayStyle {
    fn default() -> Self {
        OverlayStyle {
            crop_uv: [0.0, 0.0, 1.0, 1.0],
            tint: Color32::from_rgb(255, 64, 64),
            mask_opacity: 0.5,
            show_mask: true,
            outside_crop_dim: 0.5,
        }
    }
}

/// Draws [`CanvasImage`]s with a [`OverlayStyle`], on the GPU when it can.
///
/// Keep one per app (textures are cached per `CanvasImage::key`).
pub struct MaskOverlay {
    gpu: Option<GpuHandle>,
    cpu: HashMap<u64, CpuEntry>,
    /// Paint counter for the CPU cache's least-recently-used eviction.
    cpu_tick: u64,
}

struct GpuHandle {
    render_state: egui_wgpu::RenderState,
    max_texture_side: u32,
}

/// CPU fallback cache for one character.
struct CpuEntry {
    /// Which photo the texture was made from (a `Weak` so the cache does not keep old photos
    /// alive, and so the allocation, hence the pointer, cannot be reused while we compare).
    photo_src: Weak<image::RgbaImage>,
    photo_tex: egui::TextureHandle,
    /// `(mask_rev, width, height)` of the mask in `mask_tex`.
    mask_id: Option<(u64, u32, u32)>,
    mask_tex: Option<egui::TextureHandle>,
    last_used: u64,
}

impl MaskOverlay {
    /// Registers the wgpu pipeline into `render_state.renderer.write().callback_resources` when
    /// given. Assumes eframe's default renderer options (no MSAA, no depth buffer); use
    /// [`MaskOverlay::with_renderer_options`] if `NativeOptions` changes those.
    pub fn new(render_state: Option<&egui_wgpu::RenderState>) -> Self {
        Self::with_renderer_options(render_state, &egui_wgpu::RendererOptions::default())
    }

    /// Like [`MaskOverlay::new`], for a renderer made with other `msaa_samples` /
    /// `depth_stencil_format` (eframe: `NativeOptions::multisampling` / `depth_buffer`); the
    /// pipeline must match egui's render pass.
    ///
    /// Falls back to the CPU path if the pipeline cannot be created.
    pub fn with_renderer_options(
        render_state: Option<&egui_wgpu::RenderState>,
        options: &egui_wgpu::RendererOptions,
    ) -> Self {
        let gpu = render_state.and_then(|rs| match GpuResources::new(rs, options) {
            Ok(resources) => {
                let max_texture_side = resources.max_texture_side;
                rs.renderer.write().callback_resources.insert(resources);
                Some(GpuHandle { render_state: rs.clone(), max_texture_side })
            }
            Err(err) => {
                eprintln!("mask overlay: GPU pipeline unavailable, using the CPU fallback: {err}");
                None
            }
        });
        MaskOverlay { gpu, cpu: HashMap::new(), cpu_tick: 0 }
    }

    /// Whether [`MaskOverlay::paint`] draws with the WGSL shader.
    pub fn uses_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// Paints the photo, the tinted mask and the crop dimming into `rect`.
    pub fn paint(&mut self, ui: &mut egui::Ui, rect: Rect, img: &CanvasImage<'_>, style: &OverlayStyle) {
        let (pw, ph) = img.photo.dimensions();
        if pw == 0 || ph == 0 || !rect.is_finite() || !rect.is_positive() {
            return;
        }
        if !ui.is_rect_visible(rect) {
            return;
        }
        match &self.gpu {
            Some(gpu) => paint_gpu(gpu, ui, rect, img, style),
            None => self.paint_cpu(ui, rect, img, style),
        }
    }

    /// Forget cached textures of a character (deleted), both CPU and GPU side.
    pub fn forget(&mut self, key: u64) {
        self.cpu.remove(&key);
        if let Some(gpu) = &self.gpu {
            let mut renderer = gpu.render_state.renderer.write();
            if let Some(resources) = renderer.callback_resources.get_mut::<GpuResources>() {
                resources.entries.remove(&key);
            }
        }
    }

    fn paint_cpu(&mut self, ui: &mut egui::Ui, rect: Rect, img: &CanvasImage<'_>, style: &OverlayStyle) {
        let ctx = ui.ctx().clone();
        let key = img.key;

        // Photo texture: (re)made when the Arc changes.
        let photo_is_cached =
            self.cpu.get(&key).is_some_and(|e| std::ptr::eq(e.photo_src.as_ptr(), Arc::as_ptr(img.photo)));
        if !photo_is_cached {
            let image = photo_color_image(img.photo, CPU_MAX_TEXTURE_SIDE);
            match self.cpu.get_mut(&key) {
                Some(entry) => {
                    entry.photo_tex.set(image, egui::TextureOptions::LINEAR);
                    entry.photo_src = Arc::downgrade(img.photo);
                }
                None => {
                    let photo_tex = ctx.load_texture(
                        format!("storymaker-overlay-photo-{key}"),
                        image,
                        egui::TextureOptions::LINEAR,
                    );
                    self.cpu.insert(
                        key,
                        CpuEntry {
                            photo_src: Arc::downgrade(img.photo),
                            photo_tex,
                            mask_id: None,
                            mask_tex: None,
                            last_used: 0,
                        },
                    );
                }
            }
        }
        self.cpu_tick += 1;
        if let Some(entry) = self.cpu.get_mut(&key) {
            entry.last_used = self.cpu_tick;
        }
        evict_least_recent(&mut self.cpu, key, |e| e.last_used);
        let Some(entry) = self.cpu.get_mut(&key) else {
            return;
        };

        // Mask coverage texture: (re)made when the revision (or size) changes, only while shown.
        let mask_ok = mask_matches_photo(img.mask, img.photo);
        if !mask_ok {
            entry.mask_tex = None;
            entry.mask_id = None;
        } else if style.show_mask {
            let id = (img.mask_rev, img.mask.width(), img.mask.height());
            if entry.mask_id != Some(id) || entry.mask_tex.is_none() {
                let image = mask_coverage_image(img.mask, CPU_MAX_TEXTURE_SIDE);
                match &mut entry.mask_tex {
                    Some(tex) => tex.set(image, egui::TextureOptions::LINEAR),
                    None => {
                        entry.mask_tex = Some(ctx.load_texture(
                            format!("storymaker-overlay-mask-{key}"),
                            image,
                            egui::TextureOptions::LINEAR,
                        ));
                    }
                }
                entry.mask_id = Some(id);
            }
        }

        let painter = ui.painter();
        let full_uv = Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
        painter.image(entry.photo_tex.id(), rect, full_uv, Color32::WHITE);
        if style.show_mask && mask_ok {
            if let Some(tex) = &entry.mask_tex {
                painter.image(tex.id(), rect, full_uv, tint_vertex_color(style));
            }
        }
        let dim = dim_alpha(style.outside_crop_dim);
        if dim > 0 {
            let mut mesh = egui::Mesh::default();
            for r in dim_rects(rect, sanitize_crop(style.crop_uv)) {
                if r.is_positive() {
                    mesh.add_colored_rect(r, Color32::from_black_alpha(dim));
                }
            }
            if !mesh.is_empty() {
                painter.add(egui::Shape::mesh(mesh));
            }
        }
    }
}

fn paint_gpu(gpu: &GpuHandle, ui: &mut egui::Ui, rect: Rect, img: &CanvasImage<'_>, style: &OverlayStyle) {
    let key = img.key;
    let mask_ok = mask_matches_photo(img.mask, img.photo);
    let show_mask = style.show_mask && mask_ok;

    // Ship the mask only when the GPU copy is stale. The truth is what `prepare` last uploaded
    // (read from the renderer), so a pass that egui discards cannot leave us thinking it is there.
    let mask = if show_mask {
        let id = (img.mask_rev, img.mask.width(), img.mask.height());
        let uploaded = {
            let renderer = gpu.render_state.renderer.read();
            renderer.callback_resources.get::<GpuResources>().and_then(|r| r.entries.get(&key)).and_then(|e| e.mask_id)
        };
        (uploaded != Some(id)).then(|| Arc::new(MaskUpload::new(img.mask, img.mask_rev, gpu.max_texture_side)))
    } else {
        None
    };

    let [r, g, b, a] = style.tint.to_srgba_unmultiplied();
    let params = GpuParams {
        crop_uv: sanitize_crop(style.crop_uv),
        view_uv: [0.0, 0.0, 1.0, 1.0], // set in `prepare`, which knows the screen size
        tint: [
            f32::from(r) / 255.0,
            f32::from(g) / 255.0,
            f32::from(b) / 255.0,
            clamp01(style.mask_opacity) * f32::from(a) / 255.0,
        ],
        dim: clamp01(style.outside_crop_dim),
        show_mask: u32::from(show_mask),
        _pad: [0; 2],
    };

    // egui transforms the callback's rect by the layer transform (e.g. `egui::Scene`) before the
    // backend sees it; `prepare` needs the same screen-space rect to compute the viewport.
    let screen_rect = ui.ctx().layer_transform_to_global(ui.layer_id()).map_or(rect, |t| t * rect);

    let callback =
        OverlayCallback { key, screen_rect, photo: Arc::clone(img.photo), mask, params, prepared: OnceLock::new() };
    ui.painter().add(egui_wgpu::Callback::new_paint_callback(rect, callback));
}

// ---------------------------------------------------------------------------------------------
// Pure helpers (shared by both paths, unit-tested)

fn clamp01(v: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, 1.0)
    }
}

/// Drops the least recently used entries (never `keep`) beyond [`MAX_CACHED_CHARACTERS`].
fn evict_least_recent<E>(cache: &mut HashMap<u64, E>, keep: u64, last_used: impl Fn(&E) -> u64) {
    while cache.len() > MAX_CACHED_CHARACTERS {
        let oldest = cache.iter().filter(|(k, _)| **k != keep).min_by_key(|(_, e)| last_used(e)).map(|(k, _)| *k);
        match oldest {
            Some(k) => cache.remove(&k),
            None => break,
        };
    }
}

/// The mask is usable only when it has the photo's size and the right number of bytes.
fn mask_matches_photo(mask: &crate::imaging::Mask, photo: &image::RgbaImage) -> bool {
    let (w, h) = photo.dimensions();
    mask.width() == w && mask.height() == h && w > 0 && h > 0 && mask.data().len() == w as usize * h as usize
}

/// The crop clamped to `[0, 1]` and ordered; NaNs become the full image.
fn sanitize_crop(crop: [f32; 4]) -> [f32; 4] {
    let c = |v: f32, default: f32| if v.is_nan() { default } else { v.clamp(0.0, 1.0) };
    let (x0, y0, x1, y1) = (c(crop[0], 0.0), c(crop[1], 0.0), c(crop[2], 1.0), c(crop[3], 1.0));
    [x0.min(x1), y0.min(y1), x0.max(x1), y0.max(y1)]
}

/// Black alpha (0..255) for a 0..1 dim amount.
fn dim_alpha(dim: f32) -> u8 {
    (clamp01(dim) * 255.0).round() as u8
}

/// The four rectangles of `rect` outside the crop (top, bottom, left, right; some may be empty).
fn dim_rects(rect: Rect, crop: [f32; 4]) -> [Rect; 4] {
    let x = |u: f32| egui::lerp(rect.min.x..=rect.max.x, u);
    let y = |v: f32| egui::lerp(rect.min.y..=rect.max.y, v);
    let (cx0, cy0, cx1, cy1) = (x(crop[0]), y(crop[1]), x(crop[2]), y(crop[3]));
    let r = |x0: f32, y0: f32, x1: f32, y1: f32| Rect::from_min_max(egui::pos2(x0, y0), egui::pos2(x1, y1));
    [
        r(rect.min.x, rect.min.y, rect.max.x, cy0),
        r(rect.min.x, cy1, rect.max.x, rect.max.y),
        r(rect.min.x, cy0, cx0, cy1),
        r(cx1, cy0, rect.max.x, cy1),
    ]
}

/// Largest size with the same aspect ratio that fits in `max_side` x `max_side`; never
/// enlarges, never returns a zero side.
fn fit_within(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let max_side = max_side.max(1);
    if width <= max_side && height <= max_side {
        return (width, height);
    }
    let scale = f64::from(max_side) / f64::from(width.max(height));
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, max_side);
    (side(width), side(height))
}

/// The photo as an egui image, area-averaged down to `max_side` when larger.
fn photo_color_image(photo: &image::RgbaImage, max_side: u32) -> egui::ColorImage {
    let (w, h) = photo.dimensions();
    let (tw, th) = fit_within(w, h, max_side);
    let size = [tw as usize, th as usize];
    if (tw, th) == (w, h) {
        egui::ColorImage::from_rgba_unmultiplied(size, photo.as_raw())
    } else {
        let small = image::imageops::thumbnail(photo, tw, th);
        egui::ColorImage::from_rgba_unmultiplied(size, small.as_raw())
    }
}

/// Mask bytes (row-major, one per pixel), area-averaged down to fit `max_side` when larger.
fn mask_bytes_fitted(mask: &crate::imaging::Mask, max_side: u32) -> (u32, u32, Vec<u8>) {
    let (w, h) = (mask.width(), mask.height());
    let (tw, th) = fit_within(w, h, max_side);
    if (tw, th) == (w, h) {
        return (w, h, mask.data().to_vec());
    }
    match image::ImageBuffer::<image::Luma<u8>, &[u8]>::from_raw(w, h, mask.data()) {
        Some(view) => (tw, th, image::imageops::thumbnail(&view, tw, th).into_raw()),
        None => (tw, th, vec![0; tw as usize * th as usize]),
    }
}

/// The CPU fallback's mask texture: white with coverage `mask` (premultiplied `(m, m, m, m)`).
/// Drawn with [`tint_vertex_color`] as the mesh colour, egui multiplies the two, giving the tint
/// colour at alpha `mask * opacity`; colour and opacity changes therefore need no new texture.
fn mask_coverage_image(mask: &crate::imaging::Mask, max_side: u32) -> egui::ColorImage {
    let (w, h, bytes) = mask_bytes_fitted(mask, max_side);
    let pixels = bytes.iter().map(|&m| Color32::from_rgba_premultiplied(m, m, m, m)).collect();
    egui::ColorImage::new([w as usize, h as usize], pixels)
}

/// Mesh colour for the mask coverage texture: the tint at alpha `opacity * tint alpha`.
fn tint_vertex_color(style: &OverlayStyle) -> Color32 {
    let [r, g, b, a] = style.tint.to_srgba_unmultiplied();
    let alpha = (clamp01(style.mask_opacity) * f32::from(a)).round() as u8;
    Color32::from_rgba_unmultiplied(r, g, b, alpha)
}

/// The part of `rect` (points, screen space) that lies on the render target, as a wgpu viewport
/// `[x, y, w, h]` in physical pixels, and the photo uv at its left, top, right, bottom edges.
///
/// egui's default callback viewport is `rect` rounded and clamped to the screen, which would
/// squash the photo when the canvas is zoomed or scrolled past the window edge; drawing only the
/// visible part with the matching uv range keeps the mapping exact.
pub(super) fn visible_viewport(rect: Rect, pixels_per_point: f32, screen_px: [u32; 2]) -> Option<([f32; 4], [f32; 4])> {
    let full = [
        rect.min.x * pixels_per_point,
        rect.min.y * pixels_per_point,
        rect.max.x * pixels_per_point,
        rect.max.y * pixels_per_point,
    ];
    let (fw, fh) = (full[2] - full[0], full[3] - full[1]);
    if !(fw > 0.0 && fh > 0.0) {
        return None;
    }
    let x0 = full[0].max(0.0);
    let y0 = full[1].max(0.0);
    let x1 = full[2].min(screen_px[0] as f32);
    let y1 = full[3].min(screen_px[1] as f32);
    if !(x1 > x0 && y1 > y0) {
        return None;
    }
    let view_uv = [(x0 - full[0]) / fw, (y0 - full[1]) / fh, (x1 - full[0]) / fw, (y1 - full[1]) / fh];
    Some(([x0, y0, x1 - x0, y1 - y0], view_uv))
}

// ---------------------------------------------------------------------------------------------
// GPU path

/// Uniforms; must match `struct Params` in `shaders/mask_overlay.wgsl` (size a multiple of 16,
/// checked against naga's layout in the tests).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct GpuParams {
    crop_uv: [f32; 4],
    view_uv: [f32; 4],
    tint: [f32; 4],
    dim: f32,
    show_mask: u32,
    _pad: [u32; 2],
}

/// A mask to upload: already downscaled to fit the device's texture limit.
struct MaskUpload {
    /// `(mask_rev, source width, source height)`.
    id: (u64, u32, u32),
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl MaskUpload {
    fn new(mask: &crate::imaging::Mask, rev: u64, max_side: u32) -> Self {
        let (width, height, data) = mask_bytes_fitted(mask, max_side);
        MaskUpload { id: (rev, mask.width(), mask.height()), width, height, data }
    }
}

/// Shared wgpu state, stored in `egui_wgpu::Renderer::callback_resources`.
struct GpuResources {
    pipeline: wgpu::RenderPipeline,
    bind_group_layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    /// 1x1 zero mask, bound when a character has no (valid) mask.
    empty_mask: wgpu::TextureView,
    max_texture_side: u32,
    entries: HashMap<u64, GpuEntry>,
    /// Prepare counter for least-recently-used eviction.
    tick: u64,
}

/// One character's textures.
#[derive(Default)]
struct GpuEntry {
    photo_src: Weak<image::RgbaImage>,
    photo: Option<GpuTexture>,
    /// `(mask_rev, source width, source height)` of the uploaded mask.
    mask_id: Option<(u64, u32, u32)>,
    mask: Option<GpuTexture>,
    last_used: u64,
}

struct GpuTexture {
    texture: wgpu::Texture,
    view: wgpu::TextureView,
}

/// What `prepare` made for `paint`.
struct Prepared {
    viewport: [f32; 4],
    bind_group: wgpu::BindGroup,
}

struct OverlayCallback {
    key: u64,
    /// The callback's rect in screen points (after the layer transform).
    screen_rect: Rect,
    photo: Arc<image::RgbaImage>,
    /// Set when the GPU's mask copy is stale.
    mask: Option<Arc<MaskUpload>>,
    params: GpuParams,
    /// `None` inside when there is nothing visible to draw.
    prepared: OnceLock<Option<Prepared>>,
}

/// Polls a future once: wgpu-core resolves error scopes immediately on native.
pub(super) fn poll_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

impl GpuResources {
    fn new(rs: &egui_wgpu::RenderState, options: &egui_wgpu::RendererOptions) -> Result<Self, String> {
        let device = &rs.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let resources = Self::create(device, &rs.queue, rs.target_format, options);
        match poll_now(scope.pop()) {
            Some(Some(err)) => Err(err.to_string()),
            _ => Ok(resources),
        }
    }

    fn create(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        target_format: wgpu::TextureFormat,
        options: &egui_wgpu::RendererOptions,
    ) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("mask_overlay"),
            source: wgpu::ShaderSource::Wgsl(SHADER_SOURCE.into()),
        });
        let texture_entry = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                multisampled: false,
                sample_type: wgpu::TextureSampleType::Float { filterable: true },
                view_dimension: wgpu::TextureViewDimension::D2,
            },
            count: None,
        };
        let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("mask_overlay"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::VERTEX | wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: std::num::NonZeroU64::new(std::mem::size_of::<GpuParams>() as u64),
                    },
                    count: None,
                },
                texture_entry(1),
                texture_entry(2),
                wgpu::BindGroupLayoutEntry {
                    binding: 3,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
            ],
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("mask_overlay"),
            bind_group_layouts: &[Some(&bind_group_layout)],
            immediate_size: 0,
        });
        // egui_wgpu's blend state: premultiplied alpha.
        let blend = wgpu::BlendState {
            color: wgpu::BlendComponent {
                src_factor: wgpu::BlendFactor::One,
                dst_factor: wgpu::BlendFactor::OneMinusSrcAlpha,
                operation: wgpu::BlendOperation::Add,
            },
            alpha: wgpu::BlendComponent {
                src_factor: wgpu::BlendFactor::OneMinusDstAlpha,
                dst_factor: wgpu::BlendFactor::One,
                operation: wgpu::BlendOperation::Add,
            },
        };
        let pipeline = quad_pipeline(device, "mask_overlay", &module, &layout, target_format, options, Some(blend));
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("mask_overlay"),
            address_mode_u: wgpu::AddressMode::ClampToEdge,
            address_mode_v: wgpu::AddressMode::ClampToEdge,
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        let empty = create_texture(device, 1, 1, wgpu::TextureFormat::R8Unorm, "mask_overlay_empty");
        write_texture(queue, &empty.texture, &[0], 1, 1, 1);
        GpuResources {
            pipeline,
            bind_group_layout,
            sampler,
            empty_mask: empty.view,
            max_texture_side: device.limits().max_texture_dimension_2d.max(1),
            entries: HashMap::new(),
            tick: 0,
        }
    }

    /// Uploads what changed for `cb` and builds its bind group.
    fn prepare(
        &mut self,
        cb: &OverlayCallback,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen: &egui_wgpu::ScreenDescriptor,
    ) -> Option<Prepared> {
        let max_side = self.max_texture_side;
        self.tick += 1;
        self.entries.entry(cb.key).or_default().last_used = self.tick;
        evict_least_recent(&mut self.entries, cb.key, |e| e.last_used);
        let entry = self.entries.get_mut(&cb.key)?;

        let (pw, ph) = cb.photo.dimensions();
        if pw == 0 || ph == 0 {
            return None;
        }
        if entry.photo.is_none() || !std::ptr::eq(entry.photo_src.as_ptr(), Arc::as_ptr(&cb.photo)) {
            let (tw, th) = fit_within(pw, ph, max_side);
            let resized;
            let data: &[u8] = if (tw, th) == (pw, ph) {
                cb.photo.as_raw()
            } else {
                resized = image::imageops::thumbnail(&*cb.photo, tw, th);
                resized.as_raw()
            };
            let tex =
                ensure_texture(device, &mut entry.photo, tw, th, wgpu::TextureFormat::Rgba8Unorm, "mask_overlay_photo");
            write_texture(queue, &tex.texture, data, 4, tw, th);
            entry.photo_src = Arc::downgrade(&cb.photo);
        }

        if let Some(mask) = &cb.mask {
            if entry.mask_id != Some(mask.id) && mask.width > 0 && mask.height > 0 {
                let tex = ensure_texture(
                    device,
                    &mut entry.mask,
                    mask.width,
                    mask.height,
                    wgpu::TextureFormat::R8Unorm,
                    "mask_overlay_mask",
                );
                write_texture(queue, &tex.texture, &mask.data, 1, mask.width, mask.height);
                entry.mask_id = Some(mask.id);
            }
        }

        let (viewport, view_uv) = visible_viewport(cb.screen_rect, screen.pixels_per_point, screen.size_in_pixels)?;
        let mut params = cb.params;
        params.view_uv = view_uv;
        let mask_view = match (&entry.mask, params.show_mask) {
            (Some(mask), 1) => &mask.view,
            _ => {
                params.show_mask = 0;
                &self.empty_mask
            }
        };
        let photo_view = &entry.photo.as_ref()?.view;
        let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("mask_overlay_params"),
            contents: bytemuck::bytes_of(&params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("mask_overlay"),
            layout: &self.bind_group_layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: uniforms.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::TextureView(photo_view) },
                wgpu::BindGroupEntry { binding: 2, resource: wgpu::BindingResource::TextureView(mask_view) },
                wgpu::BindGroupEntry { binding: 3, resource: wgpu::BindingResource::Sampler(&self.sampler) },
            ],
        });
        Some(Prepared { viewport, bind_group })
    }
}

/// A pipeline drawing one full-viewport quad (`vs_main`, 4-vertex triangle strip, no vertex
/// buffer) into egui's render pass: same depth/stencil and MSAA state as egui's own pipeline, so
/// the pass accepts it, and like egui_wgpu gamma-space output unless the target is sRGB
/// (`fs_main_gamma_framebuffer` / `fs_main_linear_framebuffer`).
pub(super) fn quad_pipeline(
    device: &wgpu::Device,
    label: &str,
    module: &wgpu::ShaderModule,
    layout: &wgpu::PipelineLayout,
    target_format: wgpu::TextureFormat,
    options: &egui_wgpu::RendererOptions,
    blend: Option<wgpu::BlendState>,
) -> wgpu::RenderPipeline {
    device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some(label),
        layout: Some(layout),
        vertex: wgpu::VertexState {
            module,
            entry_point: Some("vs_main"),
            buffers: &[],
            compilation_options: wgpu::PipelineCompilationOptions::default(),
        },
        primitive: wgpu::PrimitiveState {
            topology: wgpu::PrimitiveTopology::TriangleStrip,
            cull_mode: None,
            ..Default::default()
        },
        depth_stencil: options.depth_stencil_format.map(|format| wgpu::DepthStencilState {
            format,
            depth_write_enabled: Some(false),
            depth_compare: Some(wgpu::CompareFunction::Always),
            stencil: wgpu::StencilState::default(),
            bias: wgpu::DepthBiasState::default(),
        }),
        multisample: wgpu::MultisampleState {
            count: options.msaa_samples.max(1),
            mask: !0,
            alpha_to_coverage_enabled: false,
        },
        fragment: Some(wgpu::FragmentState {
            module,
            entry_point: Some(if target_format.is_srgb() {
                "fs_main_linear_framebuffer"
            } else {
                "fs_main_gamma_framebuffer"
            }),
            targets: &[Some(wgpu::ColorTargetState {
                format: target_format,
                blend,
                write_mask: wgpu::ColorWrites::ALL,
            })],
            compilation_options: wgpu::PipelineCompilationOptions::default(),
        }),
        multiview_mask: None,
        cache: None,
    })
}

fn create_texture(
    device: &wgpu::Device,
    width: u32,
    height: u32,
    format: wgpu::TextureFormat,
    label: &str,
) -> GpuTexture {
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
    GpuTexture { texture, view }
}

/// The texture in `slot`, recreated when its size differs.
fn ensure_texture<'a>(
    device: &wgpu::Device,
    slot: &'a mut Option<GpuTexture>,
    width: u32,
    height: u32,
    format: wgpu::TextureFormat,
    label: &str,
) -> &'a GpuTexture {
    let fits = slot.as_ref().is_some_and(|t| t.texture.width() == width && t.texture.height() == height);
    if !fits {
        *slot = None;
    }
    slot.get_or_insert_with(|| create_texture(device, width, height, format, label))
}

/// Whole-texture upload of tightly packed rows. `Queue::write_texture` (unlike buffer-to-texture
/// copies) does not need `bytes_per_row` aligned to 256: wgpu-core restages the rows itself.
fn write_texture(
    queue: &wgpu::Queue,
    texture: &wgpu::Texture,
    data: &[u8],
    bytes_per_pixel: u32,
    width: u32,
    height: u32,
) {
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        data,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(bytes_per_pixel * width),
            rows_per_image: Some(height),
        },
        wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
    );
}

impl egui_wgpu::CallbackTrait for OverlayCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen_descriptor: &egui_wgpu::ScreenDescriptor,
        _egui_encoder: &mut wgpu::CommandEncoder,
        callback_resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let prepared = callback_resources
            .get_mut::<GpuResources>()
            .and_then(|resources| resources.prepare(self, device, queue, screen_descriptor));
        // A callback is prepared once; ignore a (theoretical) second call.
        let _ = self.prepared.set(prepared);
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        callback_resources: &egui_wgpu::CallbackResources,
    ) {
        let (Some(Some(prepared)), Some(resources)) = (self.prepared.get(), callback_resources.get::<GpuResources>())
        else {
            return;
        };
        let [x, y, w, h] = prepared.viewport;
        render_pass.set_viewport(x, y, w, h, 0.0, 1.0);
        render_pass.set_pipeline(&resources.pipeline);
        render_pass.set_bind_group(0, &prepared.bind_group, &[]);
        render_pass.draw(0..4, 0..1);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::imaging::Mask;

    fn solid_photo(w: u32, h: u32, rgba: [u8; 4]) -> Arc<image::RgbaImage> {
        Arc::new(image::RgbaImage::from_pixel(w, h, image::Rgba(rgba)))
    }

    #[test]
    fn fit_within_keeps_aspect_and_never_enlarges() {
        assert_eq!(fit_within(4000, 3000, 2048), (2048, 1536));
        assert_eq!(fit_within(3000, 4000, 2048), (1536, 2048));
        assert_eq!(fit_within(100, 50, 2048), (100, 50));
        assert_eq!(fit_within(2048, 2048, 2048), (2048, 2048));
        // Extreme aspect: the short side never collapses to zero.
        assert_eq!(fit_within(100_000, 3, 2048), (2048, 1));
        // 64 MP (9248 x 6936, 4:3) to an 8192 device limit.
        let (w, h) = fit_within(9248, 6936, 8192);
        assert_eq!(w, 8192);
        assert!((f64::from(w) / f64::from(h) - 9248.0 / 6936.0).abs() < 1e-3);

        let photo = solid_photo(40, 20, [10, 20, 30, 255]);
        let img = photo_color_image(&photo, 8);
        assert_eq!(img.size, [8, 4]);
        assert!(img.pixels.iter().all(|&p| p == Color32::from_rgb(10, 20, 30)));
    }

    #[test]
    fn mask_tint_alpha_is_mask_times_opacity() {
        let mask = Mask::from_raw(2, 2, vec![0, 64, 128, 255]).expect("2x2 mask");
        let coverage = mask_coverage_image(&mask, 2048);
        assert_eq!(coverage.size, [2, 2]);
        for (px, m) in coverage.pixels.iter().zip([0u8, 64, 128, 255]) {
            assert_eq!(px.to_array(), [m, m, m, m], "premultiplied white at coverage {m}");
        }

        let style = OverlayStyle { tint: Color32::from_rgb(255, 0, 0), mask_opacity: 0.5, ..OverlayStyle::default() };
        let tint = tint_vertex_color(&style);
        assert_eq!(tint.to_srgba_unmultiplied(), [255, 0, 0, 128]);
        // egui multiplies mesh colour by texel: alpha = opacity * mask.
        for (px, m) in coverage.pixels.iter().zip([0.0f32, 64.0, 128.0, 255.0]) {
            let alpha = f32::from(tint.a()) * f32::from(px.a()) / 255.0;
            assert!((alpha - 0.5 * m).abs() <= 1.0, "alpha {alpha} for mask {m}");
            let red = f32::from(tint.r()) * f32::from(px.r()) / 255.0;
            assert!((red - alpha).abs() <= 1.0, "premultiplied red equals alpha");
        }

        // Translucent tint colours scale the opacity too; NaN opacity hides the mask.
        let style = OverlayStyle {
            tint: Color32::from_rgba_unmultiplied(0, 255, 0, 128),
            mask_opacity: 1.0,
            ..OverlayStyle::default()
        };
        assert_eq!(tint_vertex_color(&style).a(), 128);
        let style = OverlayStyle { mask_opacity: f32::NAN, ..OverlayStyle::default() };
        assert_eq!(tint_vertex_color(&style).a(), 0);
    }

    #[test]
    fn large_masks_are_area_averaged() {
        // 4x2: left half set, right half clear -> 2x1 [255, 0].
        let mask = Mask::from_raw(4, 2, vec![255, 255, 0, 0, 255, 255, 0, 0]).expect("mask");
        let (w, h, bytes) = mask_bytes_fitted(&mask, 2);
        assert_eq!((w, h), (2, 1));
        assert_eq!(bytes, vec![255, 0]);
        let coverage = mask_coverage_image(&mask, 2);
        assert_eq!(coverage.size, [2, 1]);
    }

    #[test]
    fn crop_is_sanitized_and_dim_rects_surround_it() {
        assert_eq!(sanitize_crop([0.75, 0.8, 0.25, 0.2]), [0.25, 0.2, 0.75, 0.8]);
        assert_eq!(sanitize_crop([f32::NAN, -1.0, 2.0, f32::NAN]), [0.0, 0.0, 1.0, 1.0]);

        let rect = Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(100.0, 200.0));
        let rects = dim_rects(rect, [0.25, 0.25, 0.75, 0.75]);
        let area: f32 = rects.iter().map(|r| r.area()).sum();
        assert!((area - (100.0 * 200.0 - 50.0 * 100.0)).abs() < 1e-3);
        let crop = Rect::from_min_max(egui::pos2(25.0, 50.0), egui::pos2(75.0, 150.0));
        for r in rects {
            assert!(rect.contains_rect(r));
            assert!(r.intersect(crop).area() <= 0.0, "{r:?} overlaps the crop");
        }
        // Full crop: nothing to dim.
        assert!(dim_rects(rect, [0.0, 0.0, 1.0, 1.0]).iter().all(|r| !r.is_positive()));
        assert_eq!(dim_alpha(0.5), 128);
        assert_eq!(dim_alpha(7.0), 255);
    }

    #[test]
    fn viewport_covers_only_the_visible_part() {
        let rect = Rect::from_min_max(egui::pos2(10.0, 20.0), egui::pos2(60.0, 70.0));
        let (vp, uv) = visible_viewport(rect, 2.0, [400, 400]).expect("visible");
        assert_eq!(vp, [20.0, 40.0, 100.0, 100.0]);
        assert_eq!(uv, [0.0, 0.0, 1.0, 1.0]);

        // Zoomed past the left and bottom window edges.
        let rect = Rect::from_min_max(egui::pos2(-50.0, 0.0), egui::pos2(50.0, 200.0));
        let (vp, uv) = visible_viewport(rect, 1.0, [100, 100]).expect("visible");
        assert_eq!(vp, [0.0, 0.0, 50.0, 100.0]);
        assert_eq!(uv, [0.5, 0.0, 1.0, 0.5]);

        let off = Rect::from_min_max(egui::pos2(200.0, 0.0), egui::pos2(300.0, 50.0));
        assert!(visible_viewport(off, 1.0, [100, 100]).is_none());
    }

    /// `GpuParams` must be laid out exactly like WGSL's `Params`, and the shader must pass naga's
    /// validator (the same front end wgpu uses when it creates the shader module).
    #[test]
    fn wgsl_parses_validates_and_matches_uniform_layout() {
        use wgpu::naga;
        let module = naga::front::wgsl::parse_str(SHADER_SOURCE)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(SHADER_SOURCE)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(SHADER_SOURCE)));

        let names: Vec<&str> = module.entry_points.iter().map(|e| e.name.as_str()).collect();
        for entry in ["vs_main", "fs_main_gamma_framebuffer", "fs_main_linear_framebuffer"] {
            assert!(names.contains(&entry), "missing entry point {entry}");
        }

        let size = std::mem::size_of::<GpuParams>();
        assert_eq!(size % 16, 0, "uniform size must be a multiple of 16");
        let (members, span) = module
            .types
            .iter()
            .find_map(|(_, ty)| match (&ty.name, &ty.inner) {
                (Some(name), naga::TypeInner::Struct { members, span }) if name == "Params" => {
                    Some((members.clone(), *span))
                }
                _ => None,
            })
            .expect("struct Params in the shader");
        assert_eq!(span as usize, size, "WGSL Params size");
        let offset = |name: &str| {
            members
                .iter()
                .find(|m| m.name.as_deref() == Some(name))
                .map(|m| m.offset as usize)
                .unwrap_or_else(|| panic!("Params.{name} missing"))
        };
        assert_eq!(offset("crop_uv"), std::mem::offset_of!(GpuParams, crop_uv));
        assert_eq!(offset("view_uv"), std::mem::offset_of!(GpuParams, view_uv));
        assert_eq!(offset("tint"), std::mem::offset_of!(GpuParams, tint));
        assert_eq!(offset("dim"), std::mem::offset_of!(GpuParams, dim));
        assert_eq!(offset("show_mask"), std::mem::offset_of!(GpuParams, show_mask));

        // Bindings the Rust bind group layout provides: group 0, bindings 0..=3.
        let mut bindings: Vec<(u32, u32)> = module
            .global_variables
            .iter()
            .filter_map(|(_, v)| v.binding.as_ref().map(|b| (b.group, b.binding)))
            .collect();
        bindings.sort_unstable();
        assert_eq!(bindings, vec![(0, 0), (0, 1), (0, 2), (0, 3)]);
    }

    /// What a headless frame produced, with its texture deltas consumed (egui 0.37
    /// debug-asserts that a `TexturesDelta` is not dropped unapplied).
    struct FrameSummary {
        /// Textured meshes (not the font atlas): texture and mesh colour.
        images: Vec<(egui::TextureId, Color32)>,
        /// Untextured, non-empty meshes (the dim rectangles).
        plain_meshes: usize,
        /// Textures created or updated (not the font atlas).
        texture_sets: usize,
    }

    fn summarize(mut out: egui::FullOutput) -> FrameSummary {
        let font = egui::TextureId::default();
        let mut images = Vec::new();
        let mut plain_meshes = 0;
        for clipped in &out.shapes {
            if let egui::Shape::Mesh(mesh) = &clipped.shape {
                if mesh.texture_id != font {
                    images.push((mesh.texture_id, mesh.vertices[0].color));
                } else if !mesh.vertices.is_empty() {
                    plain_meshes += 1;
                }
            }
        }
        let texture_sets = out.textures_delta.set.keys().filter(|id| **id != font).count();
        out.textures_delta.clear();
        FrameSummary { images, plain_meshes, texture_sets }
    }

    #[test]
    fn cpu_fallback_paints_headless_and_caches_textures() {
        let ctx = egui::Context::default();
        let mut overlay = MaskOverlay::new(None);
        assert!(!overlay.uses_gpu());

        let photo = solid_photo(8, 4, [100, 150, 200, 255]);
        let mask = Mask::filled(8, 4, 255);
        let style = OverlayStyle { crop_uv: [0.25, 0.25, 0.75, 0.75], ..OverlayStyle::default() };
        let rect = Rect::from_min_max(egui::pos2(10.0, 10.0), egui::pos2(90.0, 50.0));
        let frame = |overlay: &mut MaskOverlay, mask: &Mask, rev: u64, photo: &Arc<image::RgbaImage>| {
            summarize(ctx.run_ui(egui::RawInput::default(), |ui| {
                let img = CanvasImage { key: 7, photo, mask, mask_rev: rev };
                overlay.paint(ui, rect, &img, &style);
            }))
        };

        // Frame 1: photo + mask textures are created; photo, tinted mask and dimming are drawn.
        let out = frame(&mut overlay, &mask, 1, &photo);
        assert_eq!(out.texture_sets, 2, "photo and mask textures");
        let meshes = out.images;
        assert_eq!(meshes.len(), 2, "photo + mask images: {meshes:?}");
        assert_eq!(meshes[0].1, Color32::WHITE);
        assert_eq!(meshes[1].1, tint_vertex_color(&style));
        assert_eq!(out.plain_meshes, 1);

        // Frame 2: nothing changed, nothing re-uploaded.
        let out = frame(&mut overlay, &mask, 1, &photo);
        assert_eq!(out.texture_sets, 0);

        // Frame 3: a brush stroke bumps the revision: only the mask is re-uploaded.
        let out = frame(&mut overlay, &mask, 2, &photo);
        assert_eq!(out.texture_sets, 1);

        // Frame 4: a new photo Arc (same pixels) is re-uploaded.
        let photo2 = solid_photo(8, 4, [100, 150, 200, 255]);
        let out = frame(&mut overlay, &mask, 2, &photo2);
        assert_eq!(out.texture_sets, 1);

        // Frame 5: a mask of the wrong size is treated as empty: photo only, no panic.
        let wrong = Mask::filled(3, 3, 255);
        let out = frame(&mut overlay, &wrong, 3, &photo2);
        let meshes = out.images;
        assert_eq!(meshes.len(), 1, "photo only: {meshes:?}");
        assert_eq!(out.plain_meshes, 1);

        // Empty photo: draws nothing, no panic.
        let empty = Arc::new(image::RgbaImage::new(0, 0));
        let out = frame(&mut overlay, &Mask::default(), 4, &empty);
        assert!(out.images.is_empty());

        // forget() drops the textures: the next paint uploads them again.
        overlay.forget(7);
        let out = frame(&mut overlay, &mask, 5, &photo2);
        assert_eq!(out.texture_sets, 2, "re-created after forget");

        // Only the most recently drawn characters keep textures.
        for key in 100..110 {
            summarize(ctx.run_ui(egui::RawInput::default(), |ui| {
                let img = CanvasImage { key, photo: &photo2, mask: &mask, mask_rev: 1 };
                overlay.paint(ui, rect, &img, &style);
            }));
        }
        assert_eq!(overlay.cpu.len(), MAX_CACHED_CHARACTERS);
        assert!((106..110).all(|k| overlay.cpu.contains_key(&k)));
    }

    // -----------------------------------------------------------------------------------------
    // Real device: render through egui_wgpu's renderer (as eframe does) into an offscreen
    // texture, once with the shader and once with the CPU fallback, and compare pixels.

    pub(in crate::ui) struct TestGpu {
        pub(in crate::ui) render_state: egui_wgpu::RenderState,
    }

    fn block_on<F: Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return Some(out);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    pub(in crate::ui) fn test_gpu(target_format: wgpu::TextureFormat) -> Result<TestGpu, String> {
        // Vulkan/Metal/DX12 (lavapipe on CI); `WGPU_BACKEND` overrides. Skipping GL avoids EGL noise.
        let desc = wgpu::InstanceDescriptor {
            backends: wgpu::Backends::PRIMARY,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        };
        let instance = wgpu::Instance::new(desc.with_env());
        let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .ok_or("request_adapter timed out")?
            .map_err(|e| format!("no wgpu adapter: {e}"))?;
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .ok_or("request_device timed out")?
            .map_err(|e| format!("no wgpu device: {e}"))?;
        let renderer = egui_wgpu::Renderer::new(
            &device,
            target_format,
            egui_wgpu::RendererOptions { dithering: false, ..Default::default() },
        );
        Ok(TestGpu {
            render_state: egui_wgpu::RenderState {
                adapter,
                available_adapters: Vec::new(),
                instance,
                device,
                queue,
                target_format,
                renderer: Arc::new(egui::mutex::RwLock::new(renderer)),
            },
        })
    }

    pub(in crate::ui) const SIZE: u32 = 64; // 64 * 4 bytes = 256: a valid bytes_per_row for the readback copy

    /// One egui frame rendered like eframe does; returns RGBA8 rows of the target.
    pub(in crate::ui) fn render(gpu: &TestGpu, ctx: &egui::Context, run: impl FnMut(&mut egui::Ui)) -> Vec<[u8; 4]> {
        let rs = &gpu.render_state;
        let (device, queue) = (&rs.device, &rs.queue);
        let input = egui::RawInput {
            screen_rect: Some(Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(SIZE as f32, SIZE as f32))),
            ..Default::default()
        };
        let mut out = ctx.run_ui(input, run);
        let prims = ctx.tessellate(std::mem::take(&mut out.shapes), out.pixels_per_point);
        let set: Vec<_> = out.textures_delta.set.drain().collect();
        let free: Vec<_> = out.textures_delta.free.drain().collect();
        let screen =
            egui_wgpu::ScreenDescriptor { size_in_pixels: [SIZE, SIZE], pixels_per_point: out.pixels_per_point };
        let target = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("test_target"),
            size: wgpu::Extent3d { width: SIZE, height: SIZE, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: rs.target_format,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
            view_formats: &[],
        });
        let view = target.create_view(&wgpu::TextureViewDescriptor::default());
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("test_readback"),
            size: u64::from(SIZE * SIZE * 4),
            usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
            mapped_at_creation: false,
        });

        let mut renderer = rs.renderer.write();
        for (id, deltas) in &set {
            for delta in deltas {
                renderer.update_texture(device, queue, *id, delta);
            }
        }
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
        let mut buffers = renderer.update_buffers(device, queue, &mut encoder, &prims, &screen);
        {
            let pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
                label: Some("test_pass"),
                color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                    view: &view,
                    resolve_target: None,
                    ops: wgpu::Operations {
                        load: wgpu::LoadOp::Clear(wgpu::Color::BLACK),
                        store: wgpu::StoreOp::Store,
                    },
                    depth_slice: None,
                })],
                depth_stencil_attachment: None,
                timestamp_writes: None,
                occlusion_query_set: None,
                multiview_mask: None,
            });
            renderer.render(&mut pass.forget_lifetime(), &prims, &screen);
        }
        encoder.copy_texture_to_buffer(
            wgpu::TexelCopyTextureInfo {
                texture: &target,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            wgpu::TexelCopyBufferInfo {
                buffer: &readback,
                layout: wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(SIZE * 4),
                    rows_per_image: Some(SIZE),
                },
            },
            wgpu::Extent3d { width: SIZE, height: SIZE, depth_or_array_layers: 1 },
        );
        buffers.push(encoder.finish());
        queue.submit(buffers);
        for id in &free {
            renderer.free_texture(id);
        }
        drop(renderer);

        readback.map_async(wgpu::MapMode::Read, .., |r| r.expect("map readback"));
        device.poll(wgpu::PollType::wait_indefinitely()).expect("device poll");
        let data = readback.get_mapped_range(..).expect("mapped").to_vec();
        data.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
    }

    struct Scene {
        photo: Arc<image::RgbaImage>,
        mask: Mask,
        rect: Rect,
        style: OverlayStyle,
    }

    /// Renders `scene` with the shader and with the CPU fallback (fresh contexts each).
    fn render_both(gpu: &TestGpu, scene: &Scene) -> (Vec<[u8; 4]>, Vec<[u8; 4]>) {
        let mut shader = MaskOverlay::new(Some(&gpu.render_state));
        assert!(shader.uses_gpu(), "pipeline must be created on a working device");
        let mut cpu = MaskOverlay::new(None);
        let draw = |overlay: &mut MaskOverlay| {
            let ctx = egui::Context::default();
            render(gpu, &ctx, |ui| {
                let img = CanvasImage { key: 1, photo: &scene.photo, mask: &scene.mask, mask_rev: 1 };
                overlay.paint(ui, scene.rect, &img, &scene.style);
            })
        };
        let g = draw(&mut shader);
        let c = draw(&mut cpu);
        (g, c)
    }

    fn max_diff(a: &[[u8; 4]], b: &[[u8; 4]]) -> (u8, usize) {
        let mut worst = (0u8, 0usize);
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            for k in 0..3 {
                let d = p[k].abs_diff(q[k]);
                if d > worst.0 {
                    worst = (d, i);
                }
            }
        }
        worst
    }

    fn close(px: [u8; 4], want: [f32; 3], tol: f32) -> bool {
        (0..3).all(|k| (f32::from(px[k]) - want[k]).abs() <= tol)
    }

    /// Photo: left half A, right half B. Mask: top half. Crop: left half. Tint red at 50 %,
    /// dim 50 %. Each screen quadrant then has a known colour.
    fn quadrant_scene(rect: Rect) -> Scene {
        let (a, b) = ([200u8, 150, 100, 255], [40u8, 100, 220, 255]);
        let photo = image::RgbaImage::from_fn(16, 16, |x, _| image::Rgba(if x < 8 { a } else { b }));
        let mask = Mask::from_raw(16, 16, (0..256).map(|i| if i < 128 { 255 } else { 0 }).collect()).expect("mask");
        Scene {
            photo: Arc::new(photo),
            mask,
            rect,
            style: OverlayStyle {
                crop_uv: [0.0, 0.0, 0.5, 1.0],
                tint: Color32::from_rgb(255, 0, 0),
                mask_opacity: 0.5,
                show_mask: true,
                outside_crop_dim: 0.5,
            },
        }
    }

    #[test]
    fn wgpu_device_renders_overlay_like_cpu_fallback() {
        let gpu = match test_gpu(wgpu::TextureFormat::Rgba8Unorm) {
            Ok(gpu) => gpu,
            Err(why) => {
                eprintln!("skipping the wgpu device test: {why}");
                return;
            }
        };
        let info = gpu.render_state.adapter.get_info();
        eprintln!("wgpu device test on {} ({:?})", info.name, info.backend);

        // 1. Known colours per quadrant, on both paths.
        let full = Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(SIZE as f32, SIZE as f32));
        let scene = quadrant_scene(full);
        let (g, c) = render_both(&gpu, &scene);
        let over = |base: [f32; 3], t: f32, tint: [f32; 3]| [0, 1, 2].map(|k| base[k] * (1.0 - t) + tint[k] * t);
        let dim = |v: [f32; 3], d: f32| v.map(|x| x * (1.0 - d));
        let (a, b, red) = ([200.0, 150.0, 100.0], [40.0, 100.0, 220.0], [255.0, 0.0, 0.0]);
        let expected = [
            ((16, 16), over(a, 0.5, red)),           // tinted, inside crop
            ((48, 16), dim(over(b, 0.5, red), 0.5)), // tinted, outside crop
            ((16, 48), a),                           // plain photo
            ((48, 48), dim(b, 0.5)),                 // outside crop
        ];
        for ((x, y), want) in expected {
            let i = (y * SIZE + x) as usize;
            assert!(close(g[i], want, 3.0), "shader at ({x},{y}): {:?} want {want:?}", g[i]);
            assert!(close(c[i], want, 3.0), "cpu at ({x},{y}): {:?} want {want:?}", c[i]);
        }
        let (d, at) = max_diff(&g, &c);
        assert!(d <= 3, "shader vs cpu differ by {d} at pixel {at}");

        // 2. Canvas zoomed past the window's left edge: only the visible part, unsquashed.
        let zoomed =
            quadrant_scene(Rect::from_min_max(egui::pos2(-(SIZE as f32), 0.0), egui::pos2(SIZE as f32, SIZE as f32)));
        let (g, c) = render_both(&gpu, &zoomed);
        let (d, at) = max_diff(&g, &c);
        assert!(d <= 3, "zoomed: shader vs cpu differ by {d} at pixel {at}");
        let i = (48 * SIZE + 48) as usize; // bottom-right: photo B, outside the crop
        assert!(close(g[i], dim(b, 0.5), 3.0), "zoomed: {:?}", g[i]);

        // 3. Odd sizes (rows not 256-byte aligned), smooth gradients, partial alpha mask.
        let (w, h) = (13, 7);
        let photo = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([(x * 19) as u8, (y * 36) as u8, 128, 255]));
        let mask = Mask::from_raw(w, h, (0..w * h).map(|i| (i * 255 / (w * h)) as u8).collect()).expect("mask");
        let scene = Scene {
            photo: Arc::new(photo),
            mask,
            rect: full,
            style: OverlayStyle {
                crop_uv: [0.25, 0.25, 0.75, 0.75],
                tint: Color32::from_rgb(0, 200, 255),
                mask_opacity: 0.8,
                show_mask: true,
                outside_crop_dim: 0.3,
            },
        };
        let (g, c) = render_both(&gpu, &scene);
        let (d, at) = max_diff(&g, &c);
        assert!(d <= 4, "odd sizes: shader vs cpu differ by {d} at pixel {at}");

        // 4. A photo wider than the device allows is downscaled, not a validation error.
        let side = gpu.render_state.device.limits().max_texture_dimension_2d + 1;
        let photo = solid_photo(side, 2, [90, 180, 30, 255]);
        let scene = Scene { photo, mask: Mask::filled(side, 2, 0), rect: full, style: OverlayStyle::default() };
        let (g, c) = render_both(&gpu, &scene);
        let i = (20 * SIZE + 20) as usize;
        assert!(close(g[i], [90.0, 180.0, 30.0], 3.0), "huge photo: {:?}", g[i]);
        assert!(close(c[i], [90.0, 180.0, 30.0], 3.0), "huge photo cpu: {:?}", c[i]);
    }

    #[test]
    fn wgpu_device_srgb_target_and_resource_lifecycle() {
        let gpu = match test_gpu(wgpu::TextureFormat::Rgba8UnormSrgb) {
            Ok(gpu) => gpu,
            Err(why) => {
                eprintln!("skipping the wgpu device test: {why}");
                return;
            }
        };
        let full = Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(SIZE as f32, SIZE as f32));
        let scene = quadrant_scene(full);
        let mut overlay = MaskOverlay::new(Some(&gpu.render_state));
        assert!(overlay.uses_gpu());
        let ctx = egui::Context::default();
        let frame = |overlay: &mut MaskOverlay, mask: &Mask, rev: u64| {
            render(&gpu, &ctx, |ui| {
                let img = CanvasImage { key: 9, photo: &scene.photo, mask, mask_rev: rev };
                overlay.paint(ui, full, &img, &scene.style);
            })
        };
        let entry_state = |gpu: &TestGpu| {
            let r = gpu.render_state.renderer.read();
            r.callback_resources.get::<GpuResources>().and_then(|res| res.entries.get(&9)).map(|e| e.mask_id)
        };

        // The sRGB target round-trips the gamma-space photo (fs_main_linear_framebuffer).
        let px = frame(&mut overlay, &scene.mask, 1);
        let i = (48 * SIZE + 16) as usize;
        assert!(close(px[i], [200.0, 150.0, 100.0], 3.0), "srgb: {:?}", px[i]);
        assert_eq!(entry_state(&gpu), Some(Some((1, 16, 16))));

        // A new revision is uploaded: clear the mask, the tint disappears.
        let cleared = Mask::filled(16, 16, 0);
        let px = frame(&mut overlay, &cleared, 2);
        assert_eq!(entry_state(&gpu), Some(Some((2, 16, 16))));
        let i = (16 * SIZE + 16) as usize;
        assert!(close(px[i], [200.0, 150.0, 100.0], 3.0), "cleared mask: {:?}", px[i]);

        // A wrong-size mask: photo only, no panic, the GPU copy is left alone.
        let wrong = Mask::filled(5, 5, 255);
        let px = frame(&mut overlay, &wrong, 3);
        assert!(close(px[i], [200.0, 150.0, 100.0], 3.0), "wrong-size mask: {:?}", px[i]);

        overlay.forget(9);
        assert_eq!(entry_state(&gpu), None, "forget drops the GPU textures");
        frame(&mut overlay, &scene.mask, 4);
        assert_eq!(entry_state(&gpu), Some(Some((4, 16, 16))));

        // Only the most recently drawn characters keep GPU textures.
        for key in 100..110 {
            render(&gpu, &ctx, |ui| {
                let img = CanvasImage { key, photo: &scene.photo, mask: &scene.mask, mask_rev: 1 };
                overlay.paint(ui, full, &img, &scene.style);
            });
        }
        let r = gpu.render_state.renderer.read();
        let entries = &r.callback_resources.get::<GpuResources>().expect("resources").entries;
        assert_eq!(entries.len(), MAX_CACHED_CHARACTERS);
        assert!((106..110).all(|k| entries.contains_key(&k)));
    }
}
