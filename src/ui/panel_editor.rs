//! The panel editor: prompts, cast, seed, generation settings, caption and dialogue, variants.
//!
//! Widgets edit a copy of the panel; when the copy differs, one `UpdatePanel` edit is applied.
//! Consecutive changes of the same field merge into one undo step (typing, slider drags).

use super::app::{PanelStatus, StoryApp};
use super::images::ImageEntry;
use crate::story::{CastSlot, CharacterBlend, Edit, Panel, PanelId, SeedChoice, StyleLoraRef, MAX_CAST};

/// SDXL's trained resolutions (width, height) offered as presets.
const SIZE_PRESETS: [(u32, u32); 5] = [(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216)];

/// A text field with an accessible label (the label names the field for screen readers and tests).
fn labelled_text(ui: &mut egui::Ui, label: &str, text: &mut String, multiline: bool, hint: &str) {
    let l = ui.label(label);
    let edit =
        if multiline { egui::TextEdit::multiline(text).desired_rows(3) } else { egui::TextEdit::singleline(text) };
    ui.add(edit.hint_text(hint).desired_width(f32::INFINITY)).labelled_by(l.id);
}

/// Which field changed, for merging undo steps.
fn changed_field(a: &Panel, b: &Panel) -> &'static str {
    if a.prompt != b.prompt {
        "prompt"
    } else if a.negative_prompt != b.negative_prompt {
        "negative"
    } else if a.caption != b.caption {
        "caption"
    } else if a.dialogue != b.dialogue {
        "dialogue"
    } else if a.params != b.params {
        "params"
    } else if a.seed != b.seed {
        "seed"
    } else {
        "other"
    }
}

pub fn show(app: &mut StoryApp, ui: &mut egui::Ui, id: PanelId) {
    let Some(index) = app.doc.panel_index(id) else { return };
    let before = app.doc.panels[index].clone();
    let mut p = before.clone();
    let mut story_loras = app.doc.settings.style_loras.clone();
    let mut generate = false;
    let mut cancel = false;
    let mut posed = false;
    ui.heading(format!("Panel {} of {}", index + 1, app.doc.panels.len()));
    // Generate / cancel / progress stay visible above the scrolling settings.
    ui.horizontal(|ui| {
        let busy = matches!(app.panel_status.get(&id), Some(PanelStatus::Queued(_) | PanelStatus::Running { .. }));
        if ui.add_enabled(!busy, egui::Button::new("Generate")).on_hover_text("Ctrl+Enter").clicked() {
            generate = true;
        }
        let l = ui.label("images");
        ui.add(egui::DragValue::new(&mut app.variants_per_run).range(1..=8))
            .labelled_by(l.id)
            .on_hover_text("Images per Generate, with consecutive seeds");
        if busy && ui.button("Cancel").clicked() {
            cancel = true;
        }
        match app.panel_status.get(&id) {
            Some(PanelStatus::Queued(_)) => {
                ui.label("Queued…");
            }
            Some(PanelStatus::Running { step, total, .. }) => {
                let f = if *total > 0 { *step as f32 / *total as f32 } else { 0.0 };
                ui.add(egui::ProgressBar::new(f).text(format!("step {step}/{total}")));
            }
            _ => {}
        }
    });
    if let Some(PanelStatus::Failed(reason)) = app.panel_status.get(&id) {
        ui.colored_label(ui.visuals().error_fg_color, format!("Generation failed: {reason}"));
    }
    if app.has_preview(id) {
        // The image forming (latents mapped to colour), at the panel's aspect.
        let aspect = p.params.width as f32 / p.params.height.max(1) as f32;
        let w = ui.available_width().min(256.0);
        let (rect, response) = ui.allocate_exact_size(egui::vec2(w, w / aspect), egui::Sense::hover());
        app.paint_preview(ui, id, rect);
        response.on_hover_text("Live preview (approximate colours; the final image is decoded by the VAE)");
    }
    ui.separator();
    // No drag-to-scroll: drags belong to the pose canvas and sliders.
    egui::ScrollArea::vertical()
        .scroll_source(egui::scroll_area::ScrollSource {
            scroll_bar: true,
            mouse_wheel: true,
            ..egui::scroll_area::ScrollSource::NONE
        })
        .show(ui, |ui| {
            labelled_text(ui, "Prompt", &mut p.prompt, true, "What happens in this panel");
            token_budget(app, ui, &p.prompt);
            labelled_text(ui, "Negative prompt", &mut p.negative_prompt, false, "What to avoid");
            token_budget(app, ui, &p.negative_prompt);
            ui.separator();
            cast_editor(app, ui, &mut p);
            posed |= super::pose_editor::show(app, ui, &mut p);
            ui.separator();
            ui.horizontal(|ui| {
                let mut locked = matches!(p.seed, SeedChoice::Fixed(_));
                if ui
                    .checkbox(&mut locked, "Lock seed")
                    .on_hover_text("A locked seed regenerates the same image")
                    .changed()
                {
                    p.seed = if locked {
                        SeedChoice::Fixed(before.chosen_variant().map_or(0, |v| v.seed))
                    } else {
                        SeedChoice::Random
                    };
                }
                if let SeedChoice::Fixed(ref mut s) = p.seed {
                    let l = ui.label("Seed");
                    ui.add(egui::DragValue::new(s)).labelled_by(l.id);
                } else {
                    ui.label("a new seed every time");
                }
            });
            egui::Grid::new("gen-params").num_columns(2).show(ui, |ui| {
                let l = ui.label("Size");
                ui.horizontal(|ui| {
                    ui.add(egui::DragValue::new(&mut p.params.width).range(256..=2048).speed(8.0).suffix(" w"))
                        .labelled_by(l.id);
                    ui.add(egui::DragValue::new(&mut p.params.height).range(256..=2048).speed(8.0).suffix(" h"))
                        .labelled_by(l.id);
                    egui::ComboBox::from_label("Size preset").selected_text("choose").show_ui(ui, |ui| {
                        for (w, h) in SIZE_PRESETS {
                            if ui
                                .selectable_label(p.params.width == w && p.params.height == h, format!("{w} × {h}"))
                                .clicked()
                            {
                                p.params.width = w;
                                p.params.height = h;
                            }
                        }
                    });
                });
                ui.end_row();
                let l = ui.label("Steps");
                ui.add(egui::Slider::new(&mut p.params.steps, 1..=100)).labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Guidance");
                ui.add(egui::Slider::new(&mut p.params.guidance, 1.0..=15.0).step_by(0.5))
                    .labelled_by(l.id)
                    .on_hover_text("1 = no classifier-free guidance: twice as fast, follows the prompt less");
                ui.end_row();
                let l = ui.label("Character strength (IP scale)");
                ui.add(egui::Slider::new(&mut p.params.ip_scale, 0.0..=1.5).step_by(0.05)).labelled_by(l.id);
                ui.end_row();
                let l = ui.label("LoRA scale");
                ui.add(egui::Slider::new(&mut p.params.lora_scale, 0.0..=1.5).step_by(0.05)).labelled_by(l.id);
                ui.end_row();
            });
            if p.params.guidance <= 1.0 {
                ui.small(
                    "Guidance 1: one model pass per step, no negative prompt (the reference pipeline cannot run this).",
                );
            }
            style_loras(app, ui, &mut p, &mut story_loras);
            ui.separator();
            labelled_text(ui, "Caption", &mut p.caption, false, "Printed under the panel");
            labelled_text(ui, "Dialogue", &mut p.dialogue, true, "Shown in a speech bubble");
            if !p.dialogue.trim().is_empty() {
                bubble_placement(ui, &mut p);
            }
            ui.separator();
            variants(app, ui, &mut p);
        });
    p.params = p.params.clone().sanitized();
    if story_loras != app.doc.settings.style_loras {
        let before = app.doc.settings.clone();
        let after = crate::story::ProjectSettings { style_loras: story_loras, ..before.clone() };
        app.edit_merging(Edit::Settings { before, after }, Some("settings:style-loras".into()));
    }
    if p != before {
        let key = if posed {
            // Each pose action is one undo step; the frames of one drag merge.
            format!("panel:{}:pose:{}", id.0, app.pose.serial)
        } else {
            format!("panel:{}:{}", id.0, changed_field(&before, &p))
        };
        app.edit_merging(Edit::UpdatePanel { before: Box::new(before), after: Box::new(p) }, Some(key));
    }
    if generate {
        let n = app.variants_per_run;
        app.generate_variants(id, n);
    }
    if cancel {
        app.cancel(id);
    }
}

/// SDXL's text encoders read 75 prompt tokens; diffusers truncates the rest (spec §3.4: the
/// adapter even hard-codes the 77-token text length), so say so while the artist types.
fn token_budget(app: &StoryApp, ui: &mut egui::Ui, prompt: &str) {
    use crate::models::tokenizer::Padding;
    let Some(Some(tok)) = app.tokenizer.get() else { return };
    let (Ok(a), Ok(b)) = (tok.encode(prompt, Padding::Eos), tok.encode(prompt, Padding::Zero)) else { return };
    let count = a.token_count.max(b.token_count);
    if a.truncated || b.truncated {
        let dropped = tok.dropped_text(prompt, Padding::Eos).ok().flatten().unwrap_or_default();
        ui.colored_label(
            ui.visuals().warn_fg_color,
            format!("{count}/75 tokens: the end of this prompt will be ignored (“{}”)", dropped.trim()),
        );
    } else if count > 0 {
        ui.small(format!("{count}/75 tokens"));
    }
}

fn cast_editor(app: &StoryApp, ui: &mut egui::Ui, p: &mut Panel) {
    ui.label(format!("Cast (up to {MAX_CAST} characters)"));
    for slot in 0..MAX_CAST {
        ui.horizontal(|ui| {
            let current = p.cast.get(slot).map(|s| s.character);
            let name =
                current.and_then(|id| app.doc.character(id)).map_or_else(|| "(nobody)".to_string(), |c| c.name.clone());
            let l = ui.label(format!("Character {}", slot + 1));
            let mut choice = current;
            egui::ComboBox::from_id_salt(("cast", slot))
                .selected_text(name)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut choice, None, "(nobody)");
                    for c in &app.doc.characters {
                        let other_slot = p.cast.iter().enumerate().any(|(k, s)| k != slot && s.character == c.id);
                        if !other_slot {
                            ui.selectable_value(&mut choice, Some(c.id), &c.name);
                        }
                    }
                })
                .response
                .labelled_by(l.id);
            if choice != current {
                match (choice, slot < p.cast.len()) {
                    (Some(c), true) => p.cast[slot] = CastSlot::new(c),
                    (Some(c), false) => p.cast.push(CastSlot::new(c)),
                    (None, true) => {
                        p.cast.remove(slot);
                    }
                    (None, false) => {}
                }
            }
        });
    }
    if app.doc.characters.is_empty() {
        ui.small("Import a photo to add characters to the cast.");
    }
    for (k, slot) in p.cast.iter_mut().enumerate() {
        slot_modes(app, ui, k, slot);
    }
    if !p.cast.is_empty() {
        // Say up front what would stop the characters from being applied.
        if let Some(missing) = app.models_probe().adapter_missing {
            ui.colored_label(ui.visuals().warn_fg_color, format!("Characters cannot be applied: {missing}."));
        }
        for slot in &p.cast {
            if let Some(c) = app.doc.character(slot.character) {
                if c.face.as_ref().and_then(|f| f.identity.as_ref()).is_none() {
                    ui.colored_label(
                        ui.visuals().warn_fg_color,
                        format!(
                            "{} has no face identity yet: open the character to find its face, or place or import it.",
                            c.name
                        ),
                    );
                }
            }
        }
    }
}

/// The adapter modes of one cast slot (spec §5.5): ID only, clothing from another photo, and
/// interpolation with another character.
fn slot_modes(app: &StoryApp, ui: &mut egui::Ui, k: usize, slot: &mut CastSlot) {
    let Some(me) = app.doc.character(slot.character) else { return };
    ui.indent(("slot-modes", k), |ui| {
        ui.checkbox(&mut slot.id_only, format!("{}: face only", me.name))
            .on_hover_text("Keep the face; clothes, hair and body come from the prompt (character embedding zeroed)");
        ui.horizontal(|ui| {
            let l = ui.label("Clothes from");
            let current = slot.cloth.clone();
            let name = current
                .as_ref()
                .and_then(|p| app.doc.characters.iter().find(|c| c.photo == *p))
                .map_or_else(|| "own photo".to_string(), |c| format!("{}’s photo", c.name));
            egui::ComboBox::from_id_salt(("cloth", k))
                .selected_text(name)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut slot.cloth, None, "own photo");
                    for c in app.doc.characters.iter().filter(|c| c.id != me.id) {
                        ui.selectable_value(&mut slot.cloth, Some(c.photo.clone()), format!("{}’s photo", c.name));
                    }
                })
                .response
                .labelled_by(l.id)
                .on_hover_text("Clothing swap: this image replaces the character's masked crop");
        });
        ui.horizontal(|ui| {
            let l = ui.label("Blend with");
            let mut with = slot.blend.map(|b| b.with);
            let name =
                with.and_then(|id| app.doc.character(id)).map_or_else(|| "nobody".to_string(), |c| c.name.clone());
            egui::ComboBox::from_id_salt(("blend", k))
                .selected_text(name)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut with, None, "nobody");
                    for c in app.doc.characters.iter().filter(|c| c.id != me.id) {
                        ui.selectable_value(&mut with, Some(c.id), &c.name);
                    }
                })
                .response
                .labelled_by(l.id)
                .on_hover_text("Character interpolation: mix two characters' embeddings");
            let mut weight = slot.blend.map_or(0.5, |b| b.weight);
            if with.is_some() {
                ui.add(egui::Slider::new(&mut weight, 0.0..=1.0).text("mix"));
            }
            slot.blend = with.map(|with| CharacterBlend { with, weight });
        });
    });
}

/// Style LoRAs from `<models>/loras/`: the story's list, or this panel's own.
fn style_loras(app: &StoryApp, ui: &mut egui::Ui, p: &mut Panel, story: &mut Vec<StyleLoraRef>) {
    egui::CollapsingHeader::new("Style LoRAs").id_salt("style-loras").show(ui, |ui| {
        let available = app.models_probe().loras;
        let mut own = p.style_loras.is_some();
        if ui.checkbox(&mut own, "This panel has its own LoRAs").changed() {
            p.style_loras = own.then(|| story.clone());
        }
        let list = match p.style_loras.as_mut() {
            Some(l) => l,
            None => story,
        };
        if available.is_empty() && list.is_empty() {
            ui.small("Put SDXL LoRA .safetensors files (kohya or diffusers format) in the models folder's loras/.");
        }
        let mut names: Vec<String> = available.clone();
        for l in list.iter() {
            if !names.contains(&l.file) {
                names.push(l.file.clone());
            }
        }
        for name in names {
            let pos = list.iter().position(|l| l.file == name);
            let mut on = pos.is_some();
            ui.horizontal(|ui| {
                let missing = !available.contains(&name);
                let label = if missing { format!("{name} (missing)") } else { name.clone() };
                if ui.checkbox(&mut on, label).changed() {
                    if on {
                        list.push(StyleLoraRef { file: name.clone(), weight: 0.8 });
                    } else if let Some(i) = pos {
                        list.remove(i);
                    }
                }
                if let Some(l) = list.iter_mut().find(|l| l.file == name) {
                    ui.add(egui::Slider::new(&mut l.weight, -2.0..=2.0).step_by(0.05).text("weight"));
                }
            });
        }
    });
}

fn variants(app: &mut StoryApp, ui: &mut egui::Ui, p: &mut Panel) {
    if p.variants.is_empty() {
        ui.label("No images yet.");
        return;
    }
    ui.horizontal(|ui| {
        ui.label(format!("Variants ({})", p.variants.len()));
        ui.checkbox(&mut app.compare.enabled, "Compare side by side")
            .on_hover_text("Tick variants to see them next to each other at a larger size");
        let best = p
            .variants
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.consistency.map(|c| (i, c)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, _)) = best {
            if ui.button("Best of N").on_hover_text("Pick the variant whose faces match the cast best").clicked() {
                p.chosen = Some(i);
            }
        }
    });
    let key = p.id;
    ui.horizontal_wrapped(|ui| {
        for (i, v) in p.variants.iter().enumerate() {
            let path = v.image.join(&app.root);
            let chosen = p.chosen == Some(i);
            ui.vertical(|ui| {
                let clicked = match app.images.get(&app.inbox, &path) {
                    ImageEntry::Ready { thumb, .. } => ui
                        .add(
                            egui::Button::image(egui::Image::new(thumb).fit_to_exact_size(egui::vec2(128.0, 128.0)))
                                .selected(chosen),
                        )
                        .on_hover_text(format!("seed {}", v.seed))
                        .clicked(),
                    ImageEntry::Loading => {
                        ui.spinner();
                        false
                    }
                    ImageEntry::Failed(e) => {
                        ui.button(format!("variant {} unavailable", i + 1)).on_hover_text(e.clone()).clicked()
                    }
                };
                if clicked {
                    p.chosen = Some(i);
                }
                if let Some(c) = v.consistency {
                    ui.small(format!("face match {c:.2}"))
                        .on_hover_text("ArcFace similarity of the faces in this image with the cast");
                }
                if app.compare.enabled {
                    let mut on = app.compare.picked.contains(&(key, i));
                    if ui.checkbox(&mut on, format!("compare {}", i + 1)).changed() {
                        if on {
                            app.compare.picked.insert((key, i));
                        } else {
                            app.compare.picked.remove(&(key, i));
                        }
                    }
                }
            });
        }
    });
    if app.compare.enabled {
        let mut picked: Vec<usize> =
            app.compare.picked.iter().filter(|(k, i)| *k == key && *i < p.variants.len()).map(|(_, i)| *i).collect();
        picked.sort_unstable();
        if picked.len() < 2 {
            ui.small("Tick two or more variants to compare them.");
            return;
        }
        let aspect = p.params.width as f32 / p.params.height.max(1) as f32;
        let w = ((ui.available_width() - 8.0 * picked.len() as f32) / picked.len() as f32).clamp(96.0, 512.0);
        ui.horizontal(|ui| {
            for i in picked {
                let v = &p.variants[i];
                let path = v.image.join(&app.root);
                ui.vertical(|ui| {
                    if let ImageEntry::Ready { thumb, .. } = app.images.get(&app.inbox, &path) {
                        ui.add(egui::Image::new(thumb).fit_to_exact_size(egui::vec2(w, w / aspect)));
                    }
                    ui.small(format!("variant {} · seed {}", i + 1, v.seed));
                });
            }
        });
    }
}

/// Where this panel's speech bubble goes on export (centre, tail tip, width as fractions of the
/// frame); automatic until the artist moves it.
fn bubble_placement(ui: &mut egui::Ui, p: &mut Panel) {
    egui::CollapsingHeader::new("Speech bubble placement").id_salt("bubble-placement").show(ui, |ui| {
        let mut b = p.bubble.unwrap_or_default();
        let before = b;
        egui::Grid::new("panel-bubble").num_columns(2).show(ui, |ui| {
            let row = |ui: &mut egui::Ui, label: &str, v: &mut f32, lo: f32| {
                let l = ui.label(label);
                ui.add(egui::Slider::new(v, lo..=1.0).fixed_decimals(2)).labelled_by(l.id);
                ui.end_row();
            };
            row(ui, "Bubble x", &mut b.center[0], 0.0);
            row(ui, "Bubble y", &mut b.center[1], 0.0);
            row(ui, "Tail x", &mut b.tail[0], 0.0);
            row(ui, "Tail y", &mut b.tail[1], 0.0);
            row(ui, "Bubble size", &mut b.width, 0.2);
        });
        if b != before {
            p.bubble = Some(b);
        }
        ui.horizontal(|ui| {
            if ui.add_enabled(p.bubble.is_some(), egui::Button::new("Automatic placement")).clicked() {
                p.bubble = None;
            }
            ui.small(if p.bubble.is_some() { "placed by hand" } else { "placed automatically" });
        });
    });
}
