//! The live preview of a running generation. On wgpu the step's latents go to the GPU as an
//! `Rgba32Float` texture and `shaders/latent_preview.wgsl` maps them to colour in an
//! `egui_wgpu` paint callback; elsewhere (glow, headless tests) the CPU-mapped image the engine
//! also sends is drawn as an egui texture. Both use the same SDXL latent→RGB factors.

use std::sync::{Arc, OnceLock, Weak};

use eframe::egui_wgpu;
use egui::Rect;
use wgpu::util::DeviceExt as _;

use super::overlay::{poll_now, quad_pipeline, visible_viewport};
use crate::pipeline::preview::LatentFrame;

const SHADER_SOURCE: &str = include_str!("../../shaders/latent_preview.wgsl");

/// Uniforms; must match `struct Params` in `shaders/latent_preview.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    view_uv: [f32; 4],
}

/// Draws latent previews, on the GPU when it can.
pub struct LatentView {
    gpu: Option<egui_wgpu::RenderState>,
}

impl LatentView {
    /// Registers the pipeline in the renderer's callback resources (eframe's default renderer
    /// options: no MSAA, no depth). Falls back to the CPU image when it cannot.
    pub fn new(render_state: Option<&egui_wgpu::RenderState>) -> LatentView {
        let gpu = render_state.and_then(|rs| match Resources::new(rs) {
            Ok(r) => {
                rs.renderer.write().callback_resources.insert(r);
                Some(rs.clone())
            }
            Err(e) => {
                eprintln!("latent preview: GPU pipeline unavailable, using the CPU image: {e}");
                None
            }
        });
        LatentView { gpu }
    }

    pub fn uses_gpu(&self) -> bool {
        self.gpu.is_some()
    }

    /// Paints the preview into `rect`: the shader from `latents`, else `cpu` (the engine's
    /// CPU-mapped image, uploaded by the caller).
    pub fn paint(&self, ui: &mut egui::Ui, rect: Rect, latents: &Arc<LatentFrame>, cpu: Option<&egui::TextureHandle>) {
        if !ui.is_rect_visible(rect) || latents.width == 0 || latents.height == 0 {
            return;
        }
        if self.gpu.is_some() {
            let screen_rect = ui.ctx().layer_transform_to_global(ui.layer_id()).map_or(rect, |t| t * rect);
            let cb = PreviewCallback { frame: latents.clone(), screen_rect, prepared: OnceLock::new() };
            ui.painter().add(egui_wgpu::Callback::new_paint_callback(rect, cb));
        } else if let Some(tex) = cpu {
            let uv = Rect::from_min_max(egui::Pos2::ZERO, egui::pos2(1.0, 1.0));
            ui.painter().image(tex.id(), rect, uv, egui::Color32::WHITE);
        }
    }
}

struct Resources {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    /// The uploaded frame (re-uploaded when a new one arrives) and its texture.
    uploaded: Weak<LatentFrame>,
    texture: Option<(wgpu::Texture, wgpu::TextureView)>,
}

struct PreviewCallback {
    frame: Arc<LatentFrame>,
    screen_rect: Rect,
    prepared: OnceLock<Option<([f32; 4], wgpu::BindGroup)>>,
}

impl Resources {
    fn new(rs: &egui_wgpu::RenderState) -> Result<Resources, String> {
        let device = &rs.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = Self::create(device, rs.target_format);
        match poll_now(scope.pop()) {
            Some(Some(err)) => Err(err.to_string()),
            _ => Ok(r),
        }
    }

    fn create(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Resources {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("latent_preview"),
            source: wgpu::ShaderSource::Wgsl(SHADER_SOURCE.into()),
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("latent_preview"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::VERTEX,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: std::num::NonZeroU64::new(std::mem::size_of::<Params>() as u64),
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Texture {
                        multisampled: false,
                        sample_type: wgpu::TextureSampleType::Float { filterable: false },
                        view_dimension: wgpu::TextureViewDimension::D2,
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("latent_preview"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        // Opaque: the preview replaces what is under it. eframe's default renderer options (no
        // MSAA, no depth buffer), as for the mask overlay.
        let options = egui_wgpu::RendererOptions::default();
        let pipeline =
            quad_pipeline(device, "latent_preview", &module, &pipeline_layout, target_format, &options, None);
        Resources { pipeline, layout, uploaded: Weak::new(), texture: None }
    }

    fn prepare(
        &mut self,
        cb: &PreviewCallback,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen: &egui_wgpu::ScreenDescriptor,
    ) -> Option<([f32; 4], wgpu::BindGroup)> {
        let f = &cb.frame;
        if f.data.len() != (f.width * f.height * 4) as usize {
            return None;
        }
        let fits = self.texture.as_ref().is_some_and(|(t, _)| t.width() == f.width && t.height() == f.height);
        if !fits {
            let texture = device.create_texture(&wgpu::TextureDescriptor {
                label: Some("latent_preview"),
                size: wgpu::Extent3d { width: f.width, height: f.height, depth_or_array_layers: 1 },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            });
            let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
            self.texture = Some((texture, view));
            self.uploaded = Weak::new();
        }
        let (texture, view) = self.texture.as_ref()?;
        if !std::ptr::eq(self.uploaded.as_ptr(), Arc::as_ptr(&cb.frame)) {
            queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                bytemuck::cast_slice(&f.data),
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(16 * f.width),
                    rows_per_image: Some(f.height),
                },
                wgpu::Extent3d { width: f.width, height: f.height, depth_or_array_layers: 1 },
            );
            self.uploaded = Arc::downgrade(&cb.frame);
        }
        let (viewport, view_uv) = visible_viewport(cb.screen_rect, screen.pixels_per_point, screen.size_in_pixels)?;
        let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("latent_preview_params"),
            contents: bytemuck::bytes_of(&Params { view_uv }),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("latent_preview"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: uniforms.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::TextureView(view) },
            ],
        });
        Some((viewport, bind_group))
    }
}

impl egui_wgpu::CallbackTrait for PreviewCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen_descriptor: &egui_wgpu::ScreenDescriptor,
        _egui_encoder: &mut wgpu::CommandEncoder,
        callback_resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let prepared =
            callback_resources.get_mut::<Resources>().and_then(|r| r.prepare(self, device, queue, screen_descriptor));
        let _ = self.prepared.set(prepared);
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        callback_resources: &egui_wgpu::CallbackResources,
    ) {
        let (Some(Some((viewport, bind_group))), Some(r)) =
            (self.prepared.get(), callback_resources.get::<Resources>())
        else {
            return;
        };
        let [x, y, w, h] = *viewport;
        render_pass.set_viewport(x, y, w, h, 0.0, 1.0);
        render_pass.set_pipeline(&r.pipeline);
        render_pass.set_bind_group(0, bind_group, &[]);
        render_pass.draw(0..4, 0..1);
    }
}

#[cfg(test)]
mod tests {
    use super::super::overlay::tests::{render, test_gpu, SIZE};
    use super::*;

    /// A 4x4 latent frame with a distinct colour per texel row (so orientation errors show).
    fn frame() -> Arc<LatentFrame> {
        let mut data = Vec::new();
        for y in 0..4 {
            for x in 0..4 {
                let v = (y as f32 - 1.5) * 0.8;
                data.extend_from_slice(&[v, 0.3 * x as f32 - 0.4, -v * 0.5, 0.2]);
            }
        }
        Arc::new(LatentFrame { width: 4, height: 4, data })
    }

    #[test]
    fn wgpu_device_maps_latents_like_the_cpu_image() {
        let gpu = match test_gpu(wgpu::TextureFormat::Rgba8Unorm) {
            Ok(gpu) => gpu,
            Err(why) => {
                eprintln!("skipped: no wgpu device here ({why}); CI runs this on lavapipe");
                return;
            }
        };
        let view = LatentView::new(Some(&gpu.render_state));
        assert!(view.uses_gpu(), "the pipeline is created on a working device");
        let f = frame();
        let rect = Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(SIZE as f32, SIZE as f32));
        let ctx = egui::Context::default();
        let px = render(&gpu, &ctx, |ui| view.paint(ui, rect, &f, None));
        // Each latent texel covers a 16x16 block; near its centre the bilinear filter is ~97 % that
        // texel, so the shader's colour is the CPU image's within a few levels.
        let cpu = f.to_rgb();
        for ty in 0..4u32 {
            for tx in 0..4u32 {
                let (x, y) = (tx * 16 + 8, ty * 16 + 8);
                let got = px[(y * SIZE + x) as usize];
                let want = cpu.get_pixel(tx, ty).0;
                for k in 0..3 {
                    assert!(
                        got[k].abs_diff(want[k]) <= 3,
                        "texel ({tx},{ty}) channel {k}: shader {} vs CPU {}",
                        got[k],
                        want[k]
                    );
                }
            }
        }
    }
}
