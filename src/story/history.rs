//! Undo/redo as commands. Every document change is an [`Edit`] that knows its inverse, so the
//! history stores only what changed: a mask stroke keeps the touched patch, a text edit keeps
//! the panel before and after (characters share their mask through an `Arc`, so that is cheap).

use std::sync::Arc;

use thiserror::Error;

use super::character::{Character, CharacterId};
use super::panel::Panel;
use super::project::{Project, ProjectSettings};
use crate::imaging::PixelRect;

#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    InsertCharacter {
        index: usize,
        character: Character,
    },
    RemoveCharacter {
        index: usize,
        character: Character,
    },
    UpdateCharacter {
        before: Box<Character>,
        after: Box<Character>,
    },
    /// A brush stroke: the mask patch under `rect` before and after.
    MaskPatch {
        id: CharacterId,
        rect: PixelRect,
        before: Vec<u8>,
        after: Vec<u8>,
    },
    InsertPanel {
        index: usize,
        panel: Box<Panel>,
    },
    RemovePanel {
        index: usize,
        panel: Box<Panel>,
    },
    UpdatePanel {
        before: Box<Panel>,
        after: Box<Panel>,
    },
    MovePanel {
        from: usize,
        to: usize,
    },
    Settings {
        before: ProjectSettings,
        after: ProjectSettings,
    },
    Title {
        before: String,
        after: String,
    },
    /// Several edits that undo as one step (e.g. deleting a character also clears its cast slots).
    Batch {
        label: String,
        edits: Vec<Edit>,
    },
}

#[derive(Debug, Error, PartialEq)]
pub enum EditError {
    #[error("the character this change refers to no longer exists")]
    NoSuchCharacter,
    #[error("the panel this change refers to no longer exists")]
    NoSuchPanel,
    #[error("position {0} is outside the list")]
    BadIndex(usize),
    #[error("the mask patch does not fit the character's mask")]
    BadPatch,
}

impl Edit {
    /// A short description for the Undo/Redo menu and the status bar.
    pub fn label(&self) -> String {
        match self {
            Edit::InsertCharacter { character, .. } => format!("add character “{}”", character.name),
            Edit::RemoveCharacter { character, .. } => format!("delete character “{}”", character.name),
            Edit::UpdateCharacter { after, .. } => format!("edit character “{}”", after.name),
            Edit::MaskPatch { .. } => "mask stroke".into(),
            Edit::InsertPanel { .. } => "add panel".into(),
            Edit::RemovePanel { .. } => "delete panel".into(),
            Edit::UpdatePanel { .. } => "edit panel".into(),
            Edit::MovePanel { .. } => "move panel".into(),
            Edit::Settings { .. } => "project settings".into(),
            Edit::Title { .. } => "rename story".into(),
            Edit::Batch { label, .. } => label.clone(),
        }
    }

    pub fn inverse(&self) -> Edit {
        match self.clone() {
            Edit::InsertCharacter { index, character } => Edit::RemoveCharacter { index, character },
            Edit::RemoveCharacter { index, character } => Edit::InsertCharacter { index, character },
            Edit::UpdateCharacter { before, after } => Edit::UpdateCharacter { before: after, after: before },
            Edit::MaskPatch { id, rect, before, after } => Edit::MaskPatch { id, rect, before: after, after: before },
            Edit::InsertPanel { index, panel } => Edit::RemovePanel { index, panel },
            Edit::RemovePanel { index, panel } => Edit::InsertPanel { index, panel },
            Edit::UpdatePanel { before, after } => Edit::UpdatePanel { before: after, after: before },
            Edit::MovePanel { from, to } => Edit::MovePanel { from: to, to: from },
            Edit::Settings { before, after } => Edit::Settings { before: after, after: before },
            Edit::Title { before, after } => Edit::Title { before: after, after: before },
            Edit::Batch { label, edits } => {
                Edit::Batch { label, edits: edits.iter().rev().map(Edit::inverse).collect() }
            }
        }
    }

    /// Applies the edit. On error the project is unchanged (batches are checked by applying in
    /// order and rolling back what was applied).
    pub fn apply(&self, doc: &mut Project) -> Result<(), EditError> {
        match self {
            Edit::InsertCharacter { index, character } => {
                if *index > doc.characters.len() {
                    return Err(EditError::BadIndex(*index));
                }
                doc.characters.insert(*index, character.clone());
                doc.next_id = doc.next_id.max(character.id.0 + 1);
            }
            Edit::RemoveCharacter { index, character } => {
                if doc.characters.get(*index).map(|c| c.id) != Some(character.id) {
                    return Err(EditError::NoSuchCharacter);
                }
                doc.characters.remove(*index);
            }
            Edit::UpdateCharacter { after, .. } => {
                let i = doc.character_index(after.id).ok_or(EditError::NoSuchCharacter)?;
                doc.characters[i] = (**after).clone();
            }
            Edit::MaskPatch { id, rect, after, .. } => {
                let i = doc.character_index(*id).ok_or(EditError::NoSuchCharacter)?;
                let mask = Arc::make_mut(&mut doc.characters[i].mask);
                if !mask.write(*rect, after) {
                    return Err(EditError::BadPatch);
                }
            }
            Edit::InsertPanel { index, panel } => {
                if *index > doc.panels.len() {
                    return Err(EditError::BadIndex(*index));
                }
                doc.panels.insert(*index, (**panel).clone());
                doc.next_id = doc.next_id.max(panel.id.0 + 1);
            }
            Edit::RemovePanel { index, panel } => {
                if doc.panels.get(*index).map(|p| p.id) != Some(panel.id) {
                    return Err(EditError::NoSuchPanel);
                }
                doc.panels.remove(*index);
            }
            Edit::UpdatePanel { after, .. } => {
                let i = doc.panel_index(after.id).ok_or(EditError::NoSuchPanel)?;
                doc.panels[i] = (**after).clone();
            }
            Edit::MovePanel { from, to } => {
                let n = doc.panels.len();
                if *from >= n || *to >= n {
                    return Err(EditError::BadIndex((*from).max(*to)));
                }
                let p = doc.panels.remove(*from);
                doc.panels.insert(*to, p);
            }
            Edit::Settings { after, .. } => doc.settings = after.clone(),
            Edit::Title { after, .. } => doc.title = after.clone(),
            Edit::Batch { edits, .. } => {
                for (done, e) in edits.iter().enumerate() {
                    if let Err(err) = e.apply(doc) {
                        for undo in edits[..done].iter().rev() {
                            // Inverses of edits that just succeeded cannot fail.
                            let _ = undo.inverse().apply(doc);
                        }
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }

    /// True when applying the edit changes mask pixels (GPU copies of masks must be refreshed).
    pub fn touches_masks(&self) -> bool {
        match self {
            Edit::MaskPatch { .. } => true,
            Edit::Batch { edits, .. } => edits.iter().any(Edit::touches_masks),
            _ => false,
        }
    }

    /// Folds a later edit of the same object into this one (typing, dragging a slider).
    fn merge(&mut self, later: &Edit) -> bool {
        match (self, later) {
            (Edit::UpdatePanel { before, after }, Edit::UpdatePanel { before: b2, after: a2 })
                if after.id == a2.id && **after == **b2 =>
            {
                *after = a2.clone();
                before.id == after.id
            }
            (Edit::UpdateCharacter { after, .. }, Edit::UpdateCharacter { before: b2, after: a2 })
                if after.id == a2.id && **after == **b2 =>
            {
                *after = a2.clone();
                true
            }
            (Edit::Settings { after, .. }, Edit::Settings { before: b2, after: a2 }) if after == b2 => {
                *after = a2.clone();
                true
            }
            (Edit::Title { after, .. }, Edit::Title { before: b2, after: a2 }) if after == b2 => {
                *after = a2.clone();
                true
            }
            _ => false,
        }
    }
}

/// How many steps the history keeps.
pub const HISTORY_LIMIT: usize = 500;

/// The undo/redo stacks plus a generation counter that changes with every document change
/// (used for "unsaved changes" and to know when GPU copies of masks are stale).
#[derive(Debug, Default)]
pub struct History {
    undo: Vec<Edit>,
    redo: Vec<Edit>,
    /// Edits with the same key that follow each other become one undo step.
    merge_key: Option<String>,
    generation: u64,
    /// Changes only when mask pixels change (a cheaper signal than `generation` for re-uploads).
    mask_generation: u64,
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn mask_generation(&self) -> u64 {
        self.mask_generation
    }

    /// A live brush stroke changed mask pixels (the undo step is recorded on release).
    pub fn touch_mask(&mut self) {
        self.generation += 1;
        self.mask_generation += 1;
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    pub fn undo_label(&self) -> Option<String> {
        self.undo.last().map(Edit::label)
    }

    pub fn redo_label(&self) -> Option<String> {
        self.redo.last().map(Edit::label)
    }

    /// Applies an edit and records it.
    pub fn apply(&mut self, doc: &mut Project, edit: Edit) -> Result<(), EditError> {
        self.apply_merging(doc, edit, None)
    }

    /// Applies an edit; consecutive edits with the same `merge_key` undo as one step.
    pub fn apply_merging(&mut self, doc: &mut Project, edit: Edit, merge_key: Option<String>) -> Result<(), EditError> {
        edit.apply(doc)?;
        self.record_merging(edit, merge_key);
        Ok(())
    }

    /// Records an edit the caller already applied (live drags that change the document while
    /// the pointer moves and commit one step on release).
    pub fn record(&mut self, edit: Edit) {
        self.record_merging(edit, None);
    }

    fn record_merging(&mut self, edit: Edit, merge_key: Option<String>) {
        self.generation += 1;
        if edit.touches_masks() {
            self.mask_generation += 1;
        }
        self.redo.clear();
        if merge_key.is_some() && merge_key == self.merge_key {
            if let Some(last) = self.undo.last_mut() {
                if last.merge(&edit) {
                    return;
                }
            }
        }
        self.merge_key = merge_key;
        self.undo.push(edit);
        if self.undo.len() > HISTORY_LIMIT {
            self.undo.remove(0);
        }
    }

    /// Ends the current merge group (focus left a text field, pointer released).
    pub fn break_merge(&mut self) {
        self.merge_key = None;
    }

    /// Marks the document changed without an undo step (e.g. a finished generation added by
    /// the engine is recorded as an edit instead; this is for live drags in progress).
    pub fn touch(&mut self) {
        self.generation += 1;
    }

    pub fn undo(&mut self, doc: &mut Project) -> Result<Option<String>, EditError> {
        self.merge_key = None;
        let Some(edit) = self.undo.pop() else { return Ok(None) };
        // If the document moved on so that the step can't be undone, the step is dropped
        // (rather than retried forever) and the error reported.
        edit.inverse().apply(doc)?;
        let label = edit.label();
        self.mask_generation += u64::from(edit.touches_masks());
        self.redo.push(edit);
        self.generation += 1;
        Ok(Some(label))
    }

    pub fn redo(&mut self, doc: &mut Project) -> Result<Option<String>, EditError> {
        self.merge_key = None;
        let Some(edit) = self.redo.pop() else { return Ok(None) };
        edit.apply(doc)?;
        let label = edit.label();
        self.mask_generation += u64::from(edit.touches_masks());
        self.undo.push(edit);
        self.generation += 1;
        Ok(Some(label))
    }

    pub fn clear(&mut self) {
        self.undo.clear();
        self.redo.clear();
        self.merge_key = None;
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_with_panels(n: usize) -> Project {
        let mut doc = Project::new("t");
        for i in 0..n {
            let mut p = doc.make_panel();
            p.prompt = format!("panel {i}");
            doc.panels.push(p);
        }
        doc
    }

    #[test]
    fn every_edit_undoes_and_redoes() {
        let mut doc = doc_with_panels(3);
        let start = doc.clone();
        let mut h = History::new();
        let mut p = doc.make_panel();
        p.prompt = "new".into();
        h.apply(&mut doc, Edit::InsertPanel { index: 1, panel: Box::new(p) }).unwrap();
        h.apply(&mut doc, Edit::MovePanel { from: 0, to: 3 }).unwrap();
        let before = Box::new(doc.panels[0].clone());
        let mut after = before.clone();
        after.caption = "hello".into();
        h.apply(&mut doc, Edit::UpdatePanel { before, after }).unwrap();
        let third = Box::new(doc.panels[2].clone());
        h.apply(&mut doc, Edit::RemovePanel { index: 2, panel: third }).unwrap();
        let end = doc.clone();
        while h.can_undo() {
            h.undo(&mut doc).unwrap();
        }
        // next_id moved when the panel was made; everything else is back.
        assert_eq!(doc.panels, start.panels);
        while h.can_redo() {
            h.redo(&mut doc).unwrap();
        }
        assert_eq!(doc, end);
    }

    #[test]
    fn typing_merges_into_one_step() {
        let mut doc = doc_with_panels(1);
        let mut h = History::new();
        for text in ["a", "ab", "abc"] {
            let before = Box::new(doc.panels[0].clone());
            let mut after = before.clone();
            after.prompt = text.into();
            h.apply_merging(&mut doc, Edit::UpdatePanel { before, after }, Some("prompt".into())).unwrap();
        }
        assert_eq!(doc.panels[0].prompt, "abc");
        h.undo(&mut doc).unwrap();
        assert_eq!(doc.panels[0].prompt, "panel 0");
        assert!(!h.can_undo());
    }

    #[test]
    fn failing_batch_leaves_document_unchanged() {
        let mut doc = doc_with_panels(2);
        let start = doc.clone();
        let batch = Edit::Batch {
            label: "x".into(),
            edits: vec![Edit::MovePanel { from: 0, to: 1 }, Edit::MovePanel { from: 5, to: 0 }],
        };
        assert!(batch.apply(&mut doc).is_err());
        assert_eq!(doc, start);
    }
}
