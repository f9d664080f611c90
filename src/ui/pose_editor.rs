//! The pose editor in the panel view: one OpenPose skeleton per cast slot drawn over the panel's
//! current image, joints dragged with the mouse, whole-skeleton move / scale / rotate / mirror,
//! presets (built in and the artist's own), hide joints (right-click). Every action edits the
//! panel copy, so undo/redo go through the document like any other panel edit.

use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2};

use super::app::StoryApp;
use super::images::ImageEntry;
use crate::pose::presets::{builtin_presets, save_user_preset, user_presets, PosePreset};
use crate::pose::render::{PoseStyle, COLOURS, LIMBS};
use crate::pose::Skeleton;
use crate::story::Panel;

/// What the mouse holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Drag {
    Joint { slot: usize, joint: usize },
    Whole { slot: usize, last: Pos2 },
}

/// Editor state that is not part of the document.
#[derive(Debug, Clone)]
pub struct PoseEditor {
    /// The cast slot the buttons act on.
    pub slot: usize,
    drag: Option<Drag>,
    /// Bumped for each separate action, so each becomes its own undo step while a drag's frames
    /// merge into one.
    pub serial: u64,
    /// Opacity of the panel image behind the skeletons.
    pub image_opacity: f32,
    /// Status of the last preset save.
    pub message: Option<String>,
}

impl Default for PoseEditor {
    fn default() -> Self {
        PoseEditor { slot: 0, drag: None, serial: 0, image_opacity: 0.5, message: None }
    }
}

/// Pixel distance within which a press grabs a joint.
const GRAB: f32 = 9.0;

fn standing() -> Skeleton {
    builtin_presets()
        .into_iter()
        .find(|p| p.people.len() == 1)
        .and_then(|p| p.skeletons().into_iter().next())
        .unwrap_or(Skeleton { keypoints: vec![Some([0.5, 0.5]); crate::pose::BODY18] })
}

/// Shows the pose section for panel `p` (a working copy). Returns true when the poses changed.
pub fn show(app: &mut StoryApp, ui: &mut egui::Ui, p: &mut Panel) -> bool {
    let before: Vec<Option<Skeleton>> = p.cast.iter().map(|s| s.pose.clone()).collect();
    egui::CollapsingHeader::new("Pose").id_salt("pose-editor").default_open(true).show(ui, |ui| {
        if p.cast.is_empty() {
            ui.small("Add a character to the cast to give it a pose.");
            return;
        }
        let ed = &mut app.pose;
        ed.slot = ed.slot.min(p.cast.len() - 1);
        ui.horizontal(|ui| {
            for (k, slot) in p.cast.iter().enumerate() {
                let name = app.doc.character(slot.character).map_or("?".to_string(), |c| c.name.clone());
                ui.selectable_value(&mut app.pose.slot, k, format!("Pose of {name}"));
            }
        });
        let k = app.pose.slot;
        ui.horizontal_wrapped(|ui| {
            let has = p.cast[k].pose.is_some();
            if !has && ui.button("Add pose").clicked() {
                p.cast[k].pose = Some(standing());
                app.pose.serial += 1;
            }
            if has {
                let mut act = |f: &dyn Fn(Skeleton) -> Skeleton, p: &mut Panel| {
                    if let Some(s) = p.cast[k].pose.take() {
                        p.cast[k].pose = Some(f(s));
                    }
                    app.pose.serial += 1;
                };
                let aspect = p.params.width as f32 / p.params.height.max(1) as f32;
                if ui.button("Mirror").on_hover_text("Flip left-right (sides swap)").clicked() {
                    act(&|s| s.mirrored(), p);
                }
                if ui.button("Rotate left 15°").on_hover_text("Rotate anticlockwise").clicked() {
                    act(&|s| s.rotated(-15f32.to_radians(), aspect), p);
                }
                if ui.button("Rotate right 15°").on_hover_text("Rotate clockwise").clicked() {
                    act(&|s| s.rotated(15f32.to_radians(), aspect), p);
                }
                if ui.button("Bigger").clicked() {
                    act(&|s| s.scaled(1.1), p);
                }
                if ui.button("Smaller").clicked() {
                    act(&|s| s.scaled(1.0 / 1.1), p);
                }
                if ui.button("Remove pose").clicked() {
                    p.cast[k].pose = None;
                    app.pose.serial += 1;
                }
            }
        });
        presets_menu(app, ui, p);
        ui.horizontal(|ui| {
            let l = ui.label("Skeleton style (whole story)");
            let mut style = app.doc.settings.pose_style;
            egui::ComboBox::from_id_salt("pose-style")
                .selected_text(match style {
                    PoseStyle::Standard => "standard OpenPose",
                    PoseStyle::Thick => "thick (xinsir SDXL)",
                })
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut style, PoseStyle::Thick, "thick (xinsir SDXL)");
                    ui.selectable_value(&mut style, PoseStyle::Standard, "standard OpenPose");
                })
                .response
                .labelled_by(l.id);
            if style != app.doc.settings.pose_style {
                let before = app.doc.settings.clone();
                let after = crate::story::ProjectSettings { pose_style: style, ..before.clone() };
                app.edit(crate::story::Edit::Settings { before, after });
            }
        });
        let l = ui.label("Image behind the pose");
        ui.add(egui::Slider::new(&mut app.pose.image_opacity, 0.0..=1.0)).labelled_by(l.id);
        canvas(app, ui, p);
        ui.small(
            "Drag a joint to move it, drag elsewhere on a skeleton to move it all, right-click a joint to hide it.",
        );
    });
    let after: Vec<Option<Skeleton>> = p.cast.iter().map(|s| s.pose.clone()).collect();
    before != after
}

fn presets_menu(app: &mut StoryApp, ui: &mut egui::Ui, p: &mut Panel) {
    let user_dir = app.pose_presets_dir();
    let (mine, errors) = user_presets(&user_dir);
    let mut chosen: Option<PosePreset> = None;
    ui.horizontal(|ui| {
        egui::ComboBox::from_label("Pose preset").selected_text("apply…").show_ui(ui, |ui| {
            for preset in builtin_presets().into_iter().chain(mine) {
                let n = preset.people.len();
                let label = if n > 1 { format!("{} ({n} people)", preset.name) } else { preset.name.clone() };
                if ui.selectable_label(false, label).clicked() {
                    chosen = Some(preset);
                }
            }
        });
        let posed: Vec<Skeleton> = p.cast.iter().filter_map(|s| s.pose.clone()).collect();
        if !posed.is_empty() && ui.button("Save as preset").clicked() {
            let name = format!("{} pose", p.prompt.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
            app.pose.message =
                Some(match save_user_preset(&user_dir, &PosePreset::from_skeletons(name.trim(), &posed)) {
                    Ok(path) => format!("Saved {}", path.display()),
                    Err(e) => e.to_string(),
                });
        }
    });
    if let Some(m) = &app.pose.message {
        ui.small(m.as_str());
    }
    for e in errors {
        ui.colored_label(ui.visuals().warn_fg_color, e);
    }
    if let Some(preset) = chosen {
        apply_preset(p, &preset, app.pose.slot);
        app.pose.serial += 1;
    }
}

/// A one-person preset goes to the selected slot; a group preset fills the slots in cast order.
pub fn apply_preset(p: &mut Panel, preset: &PosePreset, slot: usize) {
    let people = preset.skeletons();
    if people.len() == 1 {
        if let Some(s) = p.cast.get_mut(slot) {
            s.pose = people.into_iter().next();
        }
    } else {
        for (s, person) in p.cast.iter_mut().zip(people) {
            s.pose = Some(person);
        }
    }
}

fn canvas(app: &mut StoryApp, ui: &mut egui::Ui, p: &mut Panel) {
    let aspect = p.params.width as f32 / p.params.height.max(1) as f32;
    let w = ui.available_width().min(360.0);
    let size = Vec2::new(w, w / aspect);
    let (response, painter) = ui.allocate_painter(size, Sense::click_and_drag());
    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Canvas, true, "Pose canvas"));
    let rect = response.rect;
    painter.rect_filled(rect, 0.0, Color32::BLACK);
    if let Some(v) = p.chosen_variant() {
        let path = v.image.join(&app.root);
        if let ImageEntry::Ready { thumb, .. } = app.images.get(&app.inbox, &path) {
            let tint = Color32::from_white_alpha((app.pose.image_opacity * 255.0) as u8);
            painter.image(thumb.id(), rect, Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)), tint);
        }
    }
    let to_screen = |q: [f32; 2]| rect.min + Vec2::new(q[0] * rect.width(), q[1] * rect.height());
    let to_norm = |q: Pos2| {
        [((q.x - rect.min.x) / rect.width()).clamp(0.0, 1.0), ((q.y - rect.min.y) / rect.height()).clamp(0.0, 1.0)]
    };
    // Interaction first, so this frame draws the result.
    let pointer = response.interact_pointer_pos().or(response.hover_pos());
    if response.drag_started() {
        // Grab what was under the press, not where the pointer is once the drag is recognised.
        let origin = ui.input(|i| i.pointer.press_origin()).or(pointer);
        if let Some(pos) = origin {
            app.pose.drag = grab(p, pos, &to_screen, app.pose.slot);
            if let Some(Drag::Joint { slot, .. } | Drag::Whole { slot, .. }) = app.pose.drag {
                app.pose.slot = slot;
            }
            app.pose.serial += 1;
        }
    }
    if response.dragged() {
        if let (Some(d), Some(pos)) = (app.pose.drag, pointer) {
            match d {
                Drag::Joint { slot, joint } => {
                    if let Some(Some(k)) =
                        p.cast.get_mut(slot).and_then(|s| s.pose.as_mut()).map(|s| &mut s.keypoints[joint])
                    {
                        *k = to_norm(pos);
                    }
                }
                Drag::Whole { slot, last } => {
                    let delta = [(pos.x - last.x) / rect.width(), (pos.y - last.y) / rect.height()];
                    if let Some(s) = p.cast.get_mut(slot).and_then(|s| s.pose.take()) {
                        p.cast[slot].pose = Some(s.translated(delta));
                    }
                    app.pose.drag = Some(Drag::Whole { slot, last: pos });
                }
            }
        }
    }
    if response.drag_stopped() {
        app.pose.drag = None;
    }
    if response.secondary_clicked() {
        if let Some(pos) = pointer {
            if let Some(Drag::Joint { slot, joint }) = grab(p, pos, &to_screen, app.pose.slot) {
                if let Some(s) = p.cast[slot].pose.as_mut() {
                    s.keypoints[joint] = None;
                    app.pose.serial += 1;
                }
            }
        }
    }
    // Draw: bones then joints, the selected slot's joints ringed.
    for (k, slot) in p.cast.iter().enumerate() {
        let Some(s) = &slot.pose else { continue };
        let kp = |i: usize| s.keypoints.get(i).copied().flatten().map(to_screen);
        for (i, &(a, b)) in LIMBS.iter().enumerate() {
            if let (Some(pa), Some(pb)) = (kp(a), kp(b)) {
                let c = COLOURS[i];
                painter.line_segment([pa, pb], Stroke::new(3.0, Color32::from_rgb(c[0], c[1], c[2])));
            }
        }
        for (i, c) in COLOURS.iter().enumerate() {
            if let Some(q) = kp(i) {
                painter.circle_filled(q, 4.0, Color32::from_rgb(c[0], c[1], c[2]));
                if k == app.pose.slot {
                    painter.circle_stroke(q, 6.0, Stroke::new(1.0, Color32::WHITE));
                }
            }
        }
    }
}

/// The joint under `pos` (selected slot first), else the skeleton whose box contains `pos`.
fn grab(p: &Panel, pos: Pos2, to_screen: &dyn Fn([f32; 2]) -> Pos2, prefer: usize) -> Option<Drag> {
    let mut order: Vec<usize> = (0..p.cast.len()).collect();
    order.sort_by_key(|&k| k != prefer);
    for &slot in &order {
        let Some(s) = &p.cast[slot].pose else { continue };
        let best = s
            .keypoints
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.map(|k| (i, to_screen(k).distance(pos))))
            .filter(|(_, d)| *d <= GRAB)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((joint, _)) = best {
            return Some(Drag::Joint { slot, joint });
        }
    }
    for &slot in &order {
        let Some(s) = &p.cast[slot].pose else { continue };
        let pts: Vec<Pos2> = s.keypoints.iter().flatten().map(|&k| to_screen(k)).collect();
        if let Some(first) = pts.first() {
            let bbox = pts.iter().fold(Rect::from_min_max(*first, *first), |r, q| r.union(Rect::from_min_max(*q, *q)));
            if bbox.expand(GRAB).contains(pos) {
                return Some(Drag::Whole { slot, last: pos });
            }
        }
    }
    None
}
