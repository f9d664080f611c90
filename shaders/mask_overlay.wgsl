// mask_overlay.wgsl: the character editor's reference-photo canvas, composited on the GPU.
//
// What it draws, for one screen rectangle (one quad, `src/ui/overlay.rs` issues it from an
// egui_wgpu paint callback):
//   1. the reference photo, stretched over the rectangle (the caller already fitted the aspect);
//   2. the character mask on top of it, tinted with the character's colour
//      (alpha = mask * opacity), when the mask is shown;
//   3. everything outside the crop rectangle darkened by `dim`.
//
// Why a shader: masks are photo-sized (up to 64 MP) and the brush edits them every frame. Here
// the mask goes to the GPU as a single-channel R8 texture and the tint is applied per pixel, so
// an edit costs one texture upload instead of rebuilding a tinted RGBA image on the CPU. The
// CPU fallback in `overlay.rs` (glow, headless tests) draws the same three layers with egui
// textures and must stay visually equivalent to this file.
//
// Colour conventions (kept identical to egui_wgpu's own `egui.wgsl`, so the photo looks the
// same as when egui draws it as an image):
//   * textures are plain `Rgba8Unorm` / `R8Unorm` (NOT sRGB), i.e. values are gamma-encoded and
//     all blending maths happens in gamma space;
//   * the output is premultiplied alpha (pipeline blend: One, OneMinusSrcAlpha);
//   * `fs_main_gamma_framebuffer` is for non-sRGB targets (what eframe prefers);
//     `fs_main_linear_framebuffer` is for sRGB targets and converts gamma -> linear on output.
//
// Layout of `Params` must match `GpuParams` in `src/ui/overlay.rs` (a unit test checks it).

struct Params {
    // Crop rectangle in normalised photo coordinates: x0, y0, x1, y1.
    crop_uv: vec4<f32>,
    // Photo coordinates at the viewport's left, top, right and bottom edges. The viewport is the
    // visible part of the photo rectangle (it may be scrolled or zoomed past the window edges).
    view_uv: vec4<f32>,
    // rgb: tint colour (gamma-encoded 0..1, not premultiplied); a: mask opacity 0..1.
    tint: vec4<f32>,
    // 0..1: how much to darken outside the crop.
    dim: f32,
    // 1 = draw the tinted mask, 0 = photo only.
    show_mask: u32,
    _pad0: u32,
    _pad1: u32,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var photo_tex: texture_2d<f32>;
@group(0) @binding(2) var mask_tex: texture_2d<f32>;
@group(0) @binding(3) var linear_sampler: sampler;

struct VertexOutput {
    @builtin(position) position: vec4<f32>,
    // Normalised photo coordinates (0,0 = top-left of the photo).
    @location(0) uv: vec2<f32>,
};

// A full-viewport quad as a 4-vertex triangle strip, no vertex buffer:
// vertex 0 = top-left, 1 = top-right, 2 = bottom-left, 3 = bottom-right.
@vertex
fn vs_main(@builtin(vertex_index) vertex_index: u32) -> VertexOutput {
    let corner = vec2<f32>(f32(vertex_index & 1u), f32(vertex_index >> 1u));
    var out: VertexOutput;
    out.position = vec4<f32>(corner.x * 2.0 - 1.0, 1.0 - corner.y * 2.0, 0.0, 1.0);
    out.uv = mix(params.view_uv.xy, params.view_uv.zw, corner);
    return out;
}

// Bilinear sample, or when the texture is minified (a 64 MP photo shown in a few hundred
// pixels, no mipmaps) the average of an n x n grid of bilinear taps spread over the pixel's
// footprint, so the photo and thin mask strokes do not shimmer.
// `duv` is the pixel's footprint in uv (from `fwidth`, taken in uniform control flow).
fn sample_area(tex: texture_2d<f32>, uv: vec2<f32>, duv: vec2<f32>) -> vec4<f32> {
    let texels = duv * vec2<f32>(textureDimensions(tex, 0));
    // Each bilinear tap already covers ~2 texels; at most 4 x 4 taps.
    let n = u32(clamp(ceil(max(texels.x, texels.y) * 0.5), 1.0, 4.0));
    if n == 1u {
        return textureSampleLevel(tex, linear_sampler, uv, 0.0);
    }
    var sum = vec4<f32>(0.0);
    let nf = f32(n);
    for (var j = 0u; j < n; j = j + 1u) {
        for (var i = 0u; i < n; i = i + 1u) {
            let offset = (vec2<f32>(f32(i), f32(j)) + 0.5) / nf - 0.5;
            sum = sum + textureSampleLevel(tex, linear_sampler, uv + offset * duv, 0.0);
        }
    }
    return sum / (nf * nf);
}

// 0-1 linear from 0-1 sRGB gamma (same as egui.wgsl).
fn linear_from_gamma_rgb(srgb: vec3<f32>) -> vec3<f32> {
    let cutoff = srgb < vec3<f32>(0.04045);
    let lower = srgb / vec3<f32>(12.92);
    let higher = pow((srgb + vec3<f32>(0.055)) / vec3<f32>(1.055), vec3<f32>(2.4));
    return select(higher, lower, cutoff);
}

// The composited colour: premultiplied alpha, gamma space.
fn composite(in: VertexOutput) -> vec4<f32> {
    let duv = max(fwidth(in.uv), vec2<f32>(1e-7));

    // 1. Photo (stored unmultiplied, like an egui image is before premultiplication).
    let photo = sample_area(photo_tex, in.uv, duv);
    var color = vec4<f32>(photo.rgb * photo.a, photo.a);

    // 2. Tinted mask: "over" with colour tint.rgb and alpha mask * opacity.
    if params.show_mask != 0u {
        let mask = sample_area(mask_tex, in.uv, duv).r;
        let t = clamp(mask * params.tint.a, 0.0, 1.0);
        color = color * (1.0 - t) + vec4<f32>(params.tint.rgb * t, t);
    }

    // 3. Dim outside the crop: "over" with black at alpha `dim`. The crop edge is
    //    anti-aliased over one screen pixel (coverage of the pixel by the crop rectangle).
    let c = params.crop_uv;
    let inside_x = clamp((in.uv.x - c.x) / duv.x + 0.5, 0.0, 1.0)
        * clamp((c.z - in.uv.x) / duv.x + 0.5, 0.0, 1.0);
    let inside_y = clamp((in.uv.y - c.y) / duv.y + 0.5, 0.0, 1.0)
        * clamp((c.w - in.uv.y) / duv.y + 0.5, 0.0, 1.0);
    let d = clamp(params.dim, 0.0, 1.0) * (1.0 - inside_x * inside_y);
    color = vec4<f32>(color.rgb * (1.0 - d), color.a * (1.0 - d) + d);

    return color;
}

// For non-sRGB ("gamma") render targets, like egui's fs_main_gamma_framebuffer.
@fragment
fn fs_main_gamma_framebuffer(in: VertexOutput) -> @location(0) vec4<f32> {
    return composite(in);
}

// For sRGB render targets, like egui's fs_main_linear_framebuffer.
@fragment
fn fs_main_linear_framebuffer(in: VertexOutput) -> @location(0) vec4<f32> {
    let color = composite(in);
    return vec4<f32>(linear_from_gamma_rgb(color.rgb), color.a);
}
