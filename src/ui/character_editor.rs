//! The character editor: name, colour and notes; the crop rectangle with handles; the mask
//! brush and eraser; the face: detected faces to pick from, or the box and keypoints placed by
//! hand with the Face tool (face_panel.rs) (reference spec §1.3–1.4 use all of these).
//!
//! Drags change the document live (so the canvas follows the pointer) and commit one undo
//! step on release: `UpdateCharacter` for the crop and a hand-placed face, `MaskPatch` (only the
//! touched rectangle) for a stroke.

use std::sync::Arc;

use super::app::StoryApp;
use super::images::ImageEntry;
use super::overlay::{CanvasImage, OverlayStyle};
use crate::imaging::{Mask, PixelRect};
use crate::story::{Character, CharacterId, CropRect, Edit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Crop,
    Brush,
    Erase,
    /// Place the face box and the five keypoints by hand (face_panel.rs).
    Face,
}

/// Part of the crop rectangle being dragged: corners 0..4 (TL, TR, BR, BL), edges 4..8
/// (top, right, bottom, left), the inside, or a fresh rectangle drawn outside it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Grab {
    Handle(usize),
    Move,
    New([f32; 2]),
}

enum Drag {
    Crop { id: CharacterId, start: Box<Character>, grab: Grab, origin: [f32; 2] },
    Paint { id: CharacterId, snapshot: Arc<Mask>, last: [f32; 2], dirty: Option<PixelRect>, value: u8 },
    Face { id: CharacterId, start: Box<Character>, grab: super::face_panel::FaceGrab },
}

pub struct CharacterEditor {
    pub tool: Tool,
    /// Brush radius in photo pixels.
    pub brush_radius: f32,
    pub show_mask: bool,
    pub mask_opacity: f32,
    drag: Option<Drag>,
}

impl Default for CharacterEditor {
    fn default() -> Self {
        CharacterEditor { tool: Tool::Brush, brush_radius: 24.0, show_mask: true, mask_opacity: 0.45, drag: None }
    }
}

impl CharacterEditor {
    pub fn is_dragging(&self) -> bool {
        self.drag.is_some()
    }
}

/// Maps between screen points and photo pixels for the fitted photo.
#[derive(Clone, Copy)]
struct View {
    rect: egui::Rect,
    scale: f32,
}

impl View {
    fn fit(avail: egui::Rect, size: [u32; 2]) -> View {
        let (pw, ph) = (size[0].max(1) as f32, size[1].max(1) as f32);
        let scale = (avail.width() / pw).min(avail.height() / ph).max(1e-3);
        let rect = egui::Rect::from_center_size(avail.center(), egui::vec2(pw * scale, ph * scale));
        View { rect, scale }
    }

    fn to_img(self, p: egui::Pos2) -> [f32; 2] {
        [(p.x - self.rect.min.x) / self.scale, (p.y - self.rect.min.y) / self.scale]
    }

    fn to_screen(self, p: [f32; 2]) -> egui::Pos2 {
        egui::pos2(self.rect.min.x + p[0] * self.scale, self.rect.min.y + p[1] * self.scale)
    }
}

/// Handle positions in photo pixels, in `Grab::Handle` order.
fn handles(c: CropRect) -> [[f32; 2]; 8] {
    let (x0, y0, x1, y1) = (c.x, c.y, c.x + c.w, c.y + c.h);
    let (mx, my) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [mx, y0], [x1, my], [mx, y1], [x0, my]]
}

/// What a press at photo point `p` grabs; `tolerance` in photo pixels.
fn hit(c: CropRect, p: [f32; 2], tolerance: f32) -> Grab {
    for (i, h) in handles(c).iter().enumerate() {
        if (h[0] - p[0]).abs() <= tolerance && (h[1] - p[1]).abs() <= tolerance {
            return Grab::Handle(i);
        }
    }
    if p[0] >= c.x && p[0] <= c.x + c.w && p[1] >= c.y && p[1] <= c.y + c.h {
        Grab::Move
    } else {
        Grab::New(p)
    }
}

/// The crop after dragging `grab` by `d` photo pixels from `start`.
fn dragged_crop(start: CropRect, grab: Grab, d: [f32; 2], now: [f32; 2], size: [u32; 2]) -> CropRect {
    let (mut x0, mut y0, mut x1, mut y1) = (start.x, start.y, start.x + start.w, start.y + start.h);
    match grab {
        Grab::Move => {
            let (pw, ph) = (size[0] as f32, size[1] as f32);
            let dx = d[0].clamp(-x0, pw - x1);
            let dy = d[1].clamp(-y0, ph - y1);
            return CropRect { x: x0 + dx, y: y0 + dy, w: start.w, h: start.h };
        }
        Grab::New(a) => {
            x0 = a[0].min(now[0]);
            x1 = a[0].max(now[0]);
            y0 = a[1].min(now[1]);
            y1 = a[1].max(now[1]);
        }
        Grab::Handle(i) => {
            let left = matches!(i, 0 | 3 | 7);
            let right = matches!(i, 1 | 2 | 5);
            let top = matches!(i, 0 | 1 | 4);
            let bottom = matches!(i, 2 | 3 | 6);
            if left {
                x0 = (x0 + d[0]).min(x1 - 1.0);
            }
            if right {
                x1 = (x1 + d[0]).max(x0 + 1.0);
            }
            if top {
                y0 = (y0 + d[1]).min(y1 - 1.0);
            }
            if bottom {
                y1 = (y1 + d[1]).max(y0 + 1.0);
            }
        }
    }
    CropRect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }.clamped(size)
}

pub fn show(app: &mut StoryApp, ui: &mut egui::Ui, id: CharacterId) {
    let Some(index) = app.doc.character_index(id) else { return };
    tool_keys(app, ui);
    let before = app.doc.characters[index].clone();
    let mut c = before.clone();
    let mut mask_action: Option<u8> = None;
    let mut auto_mask = false;
    let mut cancel_auto_mask = false;
    let mut face_action = None;
    egui::Panel::right("character-props").resizable(true).default_size(260.0).show(ui, |ui| {
        ui.heading("Character");
        let l = ui.label("Name");
        ui.add(egui::TextEdit::singleline(&mut c.name).desired_width(f32::INFINITY)).labelled_by(l.id);
        ui.horizontal(|ui| {
            let l = ui.label("Colour tag");
            ui.color_edit_button_srgb(&mut c.colour).labelled_by(l.id);
        });
        let l = ui.label("Notes");
        ui.add(egui::TextEdit::multiline(&mut c.notes).desired_rows(3).desired_width(f32::INFINITY)).labelled_by(l.id);
        ui.separator();
        ui.label("Tool");
        ui.horizontal(|ui| {
            let ed = &mut app.editor;
            ui.selectable_value(&mut ed.tool, Tool::Brush, "Brush (B)");
            ui.selectable_value(&mut ed.tool, Tool::Erase, "Eraser (E)");
            ui.selectable_value(&mut ed.tool, Tool::Crop, "Crop (C)");
            ui.selectable_value(&mut ed.tool, Tool::Face, "Face (F)")
                .on_hover_text("Click a detected face to use it, drag a keypoint to move it, or draw a new face box");
        });
        let l = ui.label("Brush size");
        ui.add(egui::Slider::new(&mut app.editor.brush_radius, 1.0..=300.0).logarithmic(true).suffix(" px"))
            .labelled_by(l.id);
        ui.checkbox(&mut app.editor.show_mask, "Show mask");
        let l = ui.label("Mask opacity");
        ui.add(egui::Slider::new(&mut app.editor.mask_opacity, 0.05..=1.0)).labelled_by(l.id);
        ui.horizontal(|ui| {
            if ui.button("Fill mask").on_hover_text("The whole photo is the character").clicked() {
                mask_action = Some(255);
            }
            if ui.button("Clear mask").clicked() {
                mask_action = Some(0);
            }
        });
        ui.horizontal(|ui| {
            let running = app.auto_mask.is_running(id);
            let hint = "Mask the person with the segmentation model in <models>/segmentation/, then refine with the \
                        brush; Alt+click a person to keep only them";
            if ui.add_enabled(!running, egui::Button::new("Auto mask")).on_hover_text(hint).clicked() {
                auto_mask = true;
            }
            if running {
                ui.spinner();
                if let Some(text) = app.auto_mask.progress_text(id) {
                    ui.label(text);
                }
            }
        });
        // On its own line: the panel is narrow and the progress text grows.
        if app.auto_mask.is_running(id) {
            let hint = "Stop the auto mask; the mask stays as it is";
            if ui.small_button("Cancel auto mask").on_hover_text(hint).clicked() {
                cancel_auto_mask = true;
            }
        }
        if ui.button("Reset crop").clicked() {
            c.crop = CropRect::full(c.photo_size);
        }
        ui.separator();
        let covered = c.mask.count_nonzero();
        if covered == 0 {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                "The mask is empty: paint over the character, or this character cannot be used.",
            );
        } else {
            let pct = 100.0 * covered as f64 / (c.photo_size[0] as f64 * c.photo_size[1] as f64).max(1.0);
            ui.label(format!("Mask covers {pct:.0}% of the photo."));
        }
        ui.separator();
        face_action = super::face_panel::section(app, ui, &c);
        ui.small(format!("Photo: {} ({}×{})", c.photo, c.photo_size[0], c.photo_size[1]));
    });
    egui::CentralPanel::default().show(ui, |ui| canvas(app, ui, id));
    if let Some(action) = face_action {
        super::face_panel::act(app, id, action);
    }
    if auto_mask {
        super::auto_mask::request(app, id);
    }
    if cancel_auto_mask {
        super::auto_mask::cancel(app, id);
    }
    if let Some(value) = mask_action {
        let rect = PixelRect { x: 0, y: 0, w: c.mask.width(), h: c.mask.height() };
        let edit = Edit::MaskPatch {
            id,
            rect,
            before: c.mask.extract(rect),
            after: vec![value; rect.w as usize * rect.h as usize],
        };
        app.edit(edit);
        return;
    }
    if c != before {
        let field = if c.name != before.name {
            "name"
        } else if c.notes != before.notes {
            "notes"
        } else if c.colour != before.colour {
            "colour"
        } else {
            "other"
        };
        let key = Some(format!("character:{}:{field}", id.0));
        app.edit_merging(Edit::UpdateCharacter { before: Box::new(before), after: Box::new(c) }, key);
    }
}

fn tool_keys(app: &mut StoryApp, ui: &egui::Ui) {
    if ui.ctx().memory(|m| m.focused().is_some()) {
        return;
    }
    ui.input_mut(|i| {
        if i.consume_key(egui::Modifiers::NONE, egui::Key::B) {
            app.editor.tool = Tool::Brush;
        }
        if i.consume_key(egui::Modifiers::NONE, egui::Key::E) {
            app.editor.tool = Tool::Erase;
        }
        if i.consume_key(egui::Modifiers::NONE, egui::Key::C) {
            app.editor.tool = Tool::Crop;
        }
        if i.consume_key(egui::Modifiers::NONE, egui::Key::F) {
            app.editor.tool = Tool::Face;
        }
        if i.consume_key(egui::Modifiers::NONE, egui::Key::OpenBracket) {
            app.editor.brush_radius = (app.editor.brush_radius / 1.25).max(1.0);
        }
        if i.consume_key(egui::Modifiers::NONE, egui::Key::CloseBracket) {
            app.editor.brush_radius = (app.editor.brush_radius * 1.25).min(300.0);
        }
    });
}

fn canvas(app: &mut StoryApp, ui: &mut egui::Ui, id: CharacterId) {
    let Some(index) = app.doc.character_index(id) else { return };
    let (photo_path, size) = {
        let c = &app.doc.characters[index];
        (c.photo.join(&app.root), c.photo_size)
    };
    let avail = ui.available_rect_before_wrap().shrink(8.0);
    let view = View::fit(avail, size);
    let response = ui.allocate_rect(view.rect, egui::Sense::click_and_drag());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Character canvas"));
    let photo = match app.images.get(&app.inbox, &photo_path) {
        ImageEntry::Ready { full, .. } => Some(full.clone()),
        ImageEntry::Loading => {
            ui.put(view.rect, egui::Spinner::new());
            None
        }
        ImageEntry::Failed(e) => {
            let msg = format!("The photo cannot be shown: {e}");
            ui.put(view.rect, egui::Label::new(msg));
            None
        }
    };
    handle_drag(app, &response, view, id);
    let Some(c) = app.doc.character(id) else { return };
    if let Some(photo) = photo {
        let [r, g, b] = c.colour;
        let style = OverlayStyle {
            crop_uv: c.crop.to_uv(size),
            tint: egui::Color32::from_rgb(r, g, b),
            mask_opacity: app.editor.mask_opacity,
            show_mask: app.editor.show_mask,
            outside_crop_dim: 0.55,
        };
        let img = CanvasImage { key: id.0, photo: &photo, mask: &c.mask, mask_rev: app.history.mask_generation() };
        app.overlay.paint(ui, view.rect, &img, &style);
    }
    // Crop outline, handles, face box on top of the photo.
    let Some(c) = app.doc.character(id) else { return };
    let painter = ui.painter_at(view.rect.expand(6.0));
    let crop = egui::Rect::from_min_max(
        view.to_screen([c.crop.x, c.crop.y]),
        view.to_screen([c.crop.x + c.crop.w, c.crop.y + c.crop.h]),
    );
    painter.rect_stroke(crop, 0.0, egui::Stroke::new(1.5, egui::Color32::WHITE), egui::StrokeKind::Middle);
    if app.editor.tool == Tool::Crop {
        for h in handles(c.crop) {
            let p = view.to_screen(h);
            painter.rect_filled(egui::Rect::from_center_size(p, egui::vec2(8.0, 8.0)), 1.0, egui::Color32::WHITE);
        }
    }
    super::face_panel::paint_candidates(app, &painter, c, |p| view.to_screen(p));
    if let Some(face) = &c.face {
        let [x1, y1, x2, y2] = face.bbox;
        let r = egui::Rect::from_min_max(view.to_screen([x1, y1]), view.to_screen([x2, y2]));
        painter.rect_stroke(
            r,
            0.0,
            egui::Stroke::new(2.0, egui::Color32::from_rgb(80, 220, 120)),
            egui::StrokeKind::Middle,
        );
        let radius = if app.editor.tool == Tool::Face { 5.0 } else { 3.0 };
        for k in face.keypoints.iter().flatten() {
            painter.circle_filled(view.to_screen(*k), radius, egui::Color32::from_rgb(80, 220, 120));
        }
    }
    if matches!(app.editor.tool, Tool::Brush | Tool::Erase) {
        if let Some(p) = response.hover_pos() {
            painter.circle_stroke(
                p,
                app.editor.brush_radius * view.scale,
                egui::Stroke::new(1.0, egui::Color32::WHITE),
            );
        }
    }
}

fn handle_drag(app: &mut StoryApp, response: &egui::Response, view: View, id: CharacterId) {
    let Some(index) = app.doc.character_index(id) else { return };
    let pointer = response.interact_pointer_pos().map(|p| view.to_img(p));
    // Alt+click: keep only the person under the click (photos with several people, issue 10).
    if response.clicked() && response.ctx.input(|i| i.modifiers.alt) {
        if let Some(p) = pointer {
            super::auto_mask::keep_region(app, id, p);
        }
        return;
    }
    // Face tool: a click inside a detected face's box picks that face (as the list does).
    if response.clicked() && app.editor.tool == Tool::Face {
        if let Some(p) = pointer {
            super::face_panel::pick_at(app, id, p);
        }
        return;
    }
    if response.drag_started() {
        // Where the button went down, not where the drag was recognised (a few pixels later).
        let origin = response.ctx.input(|i| i.pointer.press_origin()).map(|p| view.to_img(p)).or(pointer);
        if let Some(p) = origin {
            let c = &app.doc.characters[index];
            app.editor.drag = Some(match app.editor.tool {
                Tool::Crop => {
                    Drag::Crop { id, start: Box::new(c.clone()), grab: hit(c.crop, p, 10.0 / view.scale), origin: p }
                }
                Tool::Face => Drag::Face {
                    id,
                    start: Box::new(c.clone()),
                    grab: super::face_panel::grab(c.face.as_ref(), p, 10.0 / view.scale),
                },
                Tool::Brush | Tool::Erase => Drag::Paint {
                    id,
                    snapshot: c.mask.clone(),
                    last: p,
                    dirty: None,
                    value: if app.editor.tool == Tool::Brush { 255 } else { 0 },
                },
            });
        }
    }
    let radius = app.editor.brush_radius;
    match (&mut app.editor.drag, pointer) {
        (Some(Drag::Crop { id: did, start, grab, origin }), Some(p)) if *did == id => {
            let d = [p[0] - origin[0], p[1] - origin[1]];
            let crop = dragged_crop(start.crop, *grab, d, p, start.photo_size);
            if app.doc.characters[index].crop != crop {
                app.doc.characters[index].crop = crop;
                app.history.touch();
            }
        }
        (Some(Drag::Paint { id: did, last, dirty, value, .. }), Some(p)) if *did == id => {
            let mask = Arc::make_mut(&mut app.doc.characters[index].mask);
            if let Some(r) = mask.stroke(*last, p, radius, *value) {
                *dirty = Some(dirty.map_or(r, |d| d.union(&r)));
                app.history.touch_mask();
            }
            *last = p;
        }
        (Some(Drag::Face { id: did, start, grab }), Some(p)) if *did == id => {
            let face = super::face_panel::dragged_face(start.face.as_ref(), *grab, p, start.photo_size);
            if app.doc.characters[index].face != face {
                app.doc.characters[index].face = face;
                app.history.touch();
            }
        }
        _ => {}
    }
    if response.drag_stopped() || (app.editor.drag.is_some() && !response.dragged() && !response.drag_started()) {
        finish_drag(app);
    }
}

/// Commits the drag in progress as one undo step.
fn finish_drag(app: &mut StoryApp) {
    match app.editor.drag.take() {
        Some(Drag::Crop { id, start, .. }) => {
            if let Some(c) = app.doc.character(id) {
                if c.crop != start.crop {
                    let after = Box::new(c.clone());
                    app.history.record(Edit::UpdateCharacter { before: start, after });
                }
            }
        }
        Some(Drag::Face { id, start, .. }) => super::face_panel::commit_manual(app, id, *start),
        Some(Drag::Paint { id, snapshot, dirty: Some(rect), .. }) => {
            if let Some(c) = app.doc.character(id) {
                let edit = Edit::MaskPatch { id, rect, before: snapshot.extract(rect), after: c.mask.extract(rect) };
                app.history.record(edit);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_handles_move_their_edges_only() {
        let start = CropRect { x: 100.0, y: 100.0, w: 200.0, h: 100.0 };
        let size = [512, 512];
        assert_eq!(hit(start, [100.0, 100.0], 5.0), Grab::Handle(0));
        assert_eq!(hit(start, [200.0, 150.0], 5.0), Grab::Move);
        let moved = dragged_crop(start, Grab::Handle(2), [50.0, 20.0], [0.0, 0.0], size);
        assert_eq!(moved, CropRect { x: 100.0, y: 100.0, w: 250.0, h: 120.0 });
        let left = dragged_crop(start, Grab::Handle(7), [-30.0, 99.0], [0.0, 0.0], size);
        assert_eq!(left, CropRect { x: 70.0, y: 100.0, w: 230.0, h: 100.0 });
        // Moving is clamped to the photo.
        let m = dragged_crop(start, Grab::Move, [1000.0, -1000.0], [0.0, 0.0], size);
        assert_eq!(m, CropRect { x: 312.0, y: 0.0, w: 200.0, h: 100.0 });
        let new = dragged_crop(start, Grab::New([10.0, 20.0]), [0.0; 2], [5.0, 60.0], size);
        assert_eq!(new, CropRect { x: 5.0, y: 20.0, w: 16.0, h: 40.0 });
    }
}
