// latent_preview.wgsl: the live preview of a generation, drawn straight from SDXL latents.
//
// The engine sends each step's predicted clean latents (4 channels at 1/8 of the image size);
// this shader maps them to colour with the fixed SDXL latent->RGB factors (the same numbers as
// `pipeline::preview::SDXL_LATENT_RGB`, which the CPU fallback in `src/ui/latent_view.rs` uses),
// so the UI shows the image forming without a VAE decode. The latents live in an `Rgba32Float`
// texture (channel k = latent channel k); float textures are not filterable everywhere, so the
// bilinear filter is done here with four `textureLoad`s.
//
// Output conventions as in mask_overlay.wgsl / egui.wgsl: opaque, gamma space, converted to
// linear only for sRGB render targets.

struct Params {
    // Latent uv (0..1) at the viewport's left, top, right and bottom edges.
    view_uv: vec4<f32>,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var latent_tex: texture_2d<f32>;

struct VertexOutput {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) vertex_index: u32) -> VertexOutput {
    let corner = vec2<f32>(f32(vertex_index & 1u), f32(vertex_index >> 1u));
    var out: VertexOutput;
    out.position = vec4<f32>(corner.x * 2.0 - 1.0, 1.0 - corner.y * 2.0, 0.0, 1.0);
    out.uv = mix(params.view_uv.xy, params.view_uv.zw, corner);
    return out;
}

fn load_clamped(p: vec2<i32>, dims: vec2<i32>) -> vec4<f32> {
    return textureLoad(latent_tex, clamp(p, vec2<i32>(0), dims - vec2<i32>(1)), 0);
}

// Latent -> RGB: rows are latent channels, columns R, G, B (SDXL factors), then (x + 1) / 2.
fn latent_rgb(l: vec4<f32>) -> vec3<f32> {
    let m = mat4x3<f32>(
        vec3<f32>(0.3651, 0.4232, 0.4341),
        vec3<f32>(-0.2533, -0.0042, 0.1068),
        vec3<f32>(0.1076, 0.1111, -0.0362),
        vec3<f32>(-0.3165, -0.2492, -0.2188),
    );
    let rgb = m * l + vec3<f32>(0.1084, -0.0175, -0.0011);
    return clamp((rgb + vec3<f32>(1.0)) * 0.5, vec3<f32>(0.0), vec3<f32>(1.0));
}

fn preview(in: VertexOutput) -> vec3<f32> {
    let dims = vec2<i32>(textureDimensions(latent_tex, 0));
    let p = in.uv * vec2<f32>(dims) - vec2<f32>(0.5);
    let base = vec2<i32>(floor(p));
    let f = p - floor(p);
    let a = mix(load_clamped(base, dims), load_clamped(base + vec2<i32>(1, 0), dims), f.x);
    let b = mix(load_clamped(base + vec2<i32>(0, 1), dims), load_clamped(base + vec2<i32>(1, 1), dims), f.x);
    return latent_rgb(mix(a, b, f.y));
}

fn linear_from_gamma_rgb(srgb: vec3<f32>) -> vec3<f32> {
    let cutoff = srgb < vec3<f32>(0.04045);
    let lower = srgb / vec3<f32>(12.92);
    let higher = pow((srgb + vec3<f32>(0.055)) / vec3<f32>(1.055), vec3<f32>(2.4));
    return select(higher, lower, cutoff);
}

@fragment
fn fs_main_gamma_framebuffer(in: VertexOutput) -> @location(0) vec4<f32> {
    return vec4<f32>(preview(in), 1.0);
}

@fragment
fn fs_main_linear_framebuffer(in: VertexOutput) -> @location(0) vec4<f32> {
    return vec4<f32>(linear_from_gamma_rgb(preview(in)), 1.0);
}
