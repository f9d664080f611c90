//! Keyboard shortcuts, consumed before any widget runs so that Ctrl+Z is the document's undo
//! (not a text field's private one).

use egui::{Key, KeyboardShortcut, Modifiers};

pub const SAVE: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::S);
pub const OPEN: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::O);
pub const UNDO: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
pub const REDO: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND.plus(Modifiers::SHIFT), Key::Z);
pub const REDO_ALT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::Y);
pub const NEW_PANEL: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::N);
pub const DUPLICATE_PANEL: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::D);
pub const IMPORT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::I);
pub const EXPORT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::E);
pub const GENERATE: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::Enter);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    Save,
    Open,
    Undo,
    Redo,
    NewPanel,
    DuplicatePanel,
    Import,
    Export,
    Generate,
    /// Delete/Backspace with no text field focused.
    Delete,
    /// Left/right arrow with no text field focused: previous/next panel.
    Previous,
    Next,
    /// Escape with no text field focused (there Escape only leaves the field) and no menu open (it closes the
    /// menu): cancel what the selection is waiting for — the panel's generation, or the character's auto mask.
    Cancel,
}

/// The shortcuts pressed this frame. Redo is checked before undo because egui matches
/// Ctrl+Z leniently (it would also fire on Ctrl+Shift+Z).
pub fn take(ctx: &egui::Context) -> Vec<Shortcut> {
    let text_focused = ctx.memory(|m| m.focused().is_some());
    // An open menu or combo box closes on Escape itself: it keeps the key.
    let popup_open = egui::Popup::is_any_open(ctx);
    ctx.input_mut(|i| {
        let mut out = Vec::new();
        let mut take = |s: &KeyboardShortcut, what: Shortcut| {
            if i.consume_shortcut(s) {
                out.push(what);
            }
        };
        take(&REDO, Shortcut::Redo);
        take(&REDO_ALT, Shortcut::Redo);
        take(&UNDO, Shortcut::Undo);
        take(&SAVE, Shortcut::Save);
        take(&OPEN, Shortcut::Open);
        take(&NEW_PANEL, Shortcut::NewPanel);
        take(&DUPLICATE_PANEL, Shortcut::DuplicatePanel);
        take(&IMPORT, Shortcut::Import);
        take(&EXPORT, Shortcut::Export);
        take(&GENERATE, Shortcut::Generate);
        if !text_focused {
            if i.consume_key(Modifiers::NONE, Key::Delete) || i.consume_key(Modifiers::NONE, Key::Backspace) {
                out.push(Shortcut::Delete);
            }
            if i.consume_key(Modifiers::NONE, Key::ArrowLeft) {
                out.push(Shortcut::Previous);
            }
            if i.consume_key(Modifiers::NONE, Key::ArrowRight) {
                out.push(Shortcut::Next);
            }
            if !popup_open && i.consume_key(Modifiers::NONE, Key::Escape) {
                out.push(Shortcut::Cancel);
            }
        }
        out
    })
}

/// Help text for the menu and README.
pub const HELP: &[(&str, &str)] = &[
    ("Ctrl+S", "Save"),
    ("Ctrl+O", "Open project"),
    ("Ctrl+Z", "Undo"),
    ("Ctrl+Shift+Z / Ctrl+Y", "Redo"),
    ("Ctrl+N", "New panel"),
    ("Ctrl+D", "Duplicate panel"),
    ("Ctrl+I", "Import photo"),
    ("Ctrl+E", "Export the storyboard (PDF / PNG)"),
    ("Ctrl+Enter", "Generate the selected panel"),
    ("Delete", "Delete the selected panel or character"),
    ("← / →", "Previous / next panel"),
    ("Esc", "Cancel the selected panel's generation or character's auto mask"),
    ("B / E / C / F", "Brush, eraser, crop, face-keypoint tool (character editor)"),
    ("[ / ]", "Smaller / larger brush"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The shortcuts `take` finds in one frame whose input holds `keys` (pressed with `modifiers`).
    fn taken(keys: &[Key], modifiers: Modifiers) -> Vec<Shortcut> {
        let ctx = egui::Context::default();
        let events = keys
            .iter()
            .map(|&key| egui::Event::Key { key, physical_key: None, pressed: true, repeat: false, modifiers })
            .collect();
        let mut found = Vec::new();
        let mut out = ctx.run_ui(egui::RawInput { events, ..Default::default() }, |ui| {
            found = take(ui.ctx());
        });
        out.textures_delta.clear(); // no renderer here to apply the font atlas to
        found
    }

    #[test]
    fn escape_is_cancel_and_other_keys_keep_their_meaning() {
        assert_eq!(taken(&[Key::Escape], Modifiers::NONE), vec![Shortcut::Cancel]);
        assert_eq!(taken(&[Key::ArrowRight], Modifiers::NONE), vec![Shortcut::Next]);
        assert_eq!(taken(&[Key::Enter], Modifiers::COMMAND), vec![Shortcut::Generate]);
        assert!(taken(&[Key::Escape], Modifiers::CTRL).is_empty(), "Ctrl+Esc is not Esc");
        assert!(HELP.iter().any(|(k, _)| *k == "Esc"), "listed in the help");
    }
}
