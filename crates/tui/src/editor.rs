//! The input line: multi-line text with a cursor, and a history of what
//! was sent (Up and Down recall it, as in a shell).

/// Lines of text being typed, with a cursor.
#[derive(Debug, Default)]
pub struct Editor {
    lines: Vec<Vec<char>>,
    row: usize,
    column: usize,
    history: Vec<String>,
    /// Position in `history` while recalling; `None` while editing fresh text.
    recalling: Option<usize>,
    /// The fresh text put aside while recalling.
    stash: Option<String>,
}

/// Entries of history kept.
const HISTORY: usize = 200;

impl Editor {
    /// An empty editor.
    pub fn new() -> Self {
        Self { lines: vec![Vec::new()], ..Self::default() }
    }

    /// The text, lines joined with `\n`.
    pub fn text(&self) -> String {
        let lines: Vec<String> = self.lines.iter().map(|line| line.iter().collect()).collect();
        lines.join("\n")
    }

    /// The lines, for drawing.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().map(|line| line.iter().collect()).collect()
    }

    /// The cursor as (line, character).
    pub fn cursor(&self) -> (usize, usize) {
        (self.row, self.column)
    }

    /// True if nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.lines.len() == 1 && self.lines[0].is_empty()
    }

    /// Replaces the text, cursor at its end.
    pub fn set_text(&mut self, text: &str) {
        self.lines = text.split('\n').map(|line| line.chars().collect()).collect();
        self.row = self.lines.len() - 1;
        self.column = self.lines[self.row].len();
    }

    /// Takes the text out (to send it), remembering it in the history.
    pub fn take(&mut self) -> String {
        let text = self.text();
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
            if self.history.len() > HISTORY {
                self.history.remove(0);
            }
        }
        self.clear();
        text
    }

    /// Empties the editor (the history stays).
    pub fn clear(&mut self) {
        self.lines = vec![Vec::new()];
        self.row = 0;
        self.column = 0;
        self.recalling = None;
        self.stash = None;
    }

    /// Inserts typed or pasted text at the cursor.
    pub fn insert(&mut self, text: &str) {
        for c in text.chars() {
            match c {
                '\n' => self.newline(),
                '\r' => {}
                c if c.is_control() && c != '\t' => {}
                c => {
                    self.lines[self.row].insert(self.column, c);
                    self.column += 1;
                }
            }
        }
    }

    /// Breaks the line at the cursor.
    pub fn newline(&mut self) {
        let rest = self.lines[self.row].split_off(self.column);
        self.lines.insert(self.row + 1, rest);
        self.row += 1;
        self.column = 0;
    }

    /// Deletes the character before the cursor (joining lines at a start).
    pub fn backspace(&mut self) {
        if self.column > 0 {
            self.column -= 1;
            self.lines[self.row].remove(self.column);
        } else if self.row > 0 {
            let line = self.lines.remove(self.row);
            self.row -= 1;
            self.column = self.lines[self.row].len();
            self.lines[self.row].extend(line);
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.column < self.lines[self.row].len() {
            self.lines[self.row].remove(self.column);
        } else if self.row + 1 < self.lines.len() {
            let next = self.lines.remove(self.row + 1);
            self.lines[self.row].extend(next);
        }
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word(&mut self) {
        let line = &mut self.lines[self.row];
        let mut start = self.column;
        while start > 0 && line[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !line[start - 1].is_whitespace() {
            start -= 1;
        }
        line.drain(start..self.column);
        self.column = start;
    }

    /// Moves left, wrapping to the previous line.
    pub fn left(&mut self) {
        if self.column > 0 {
            self.column -= 1;
        } else if self.row > 0 {
            self.row -= 1;
            self.column = self.lines[self.row].len();
        }
    }

    /// Moves right, wrapping to the next line.
    pub fn right(&mut self) {
        if self.column < self.lines[self.row].len() {
            self.column += 1;
        } else if self.row + 1 < self.lines.len() {
            self.row += 1;
            self.column = 0;
        }
    }

    /// Start of the line.
    pub fn home(&mut self) {
        self.column = 0;
    }

    /// End of the line.
    pub fn end(&mut self) {
        self.column = self.lines[self.row].len();
    }

    /// Up a line; on the first line, the previous history entry.
    pub fn up(&mut self) {
        if self.row > 0 {
            self.row -= 1;
            self.column = self.column.min(self.lines[self.row].len());
            return;
        }
        let previous = match self.recalling {
            None if !self.history.is_empty() => self.history.len() - 1,
            Some(index) if index > 0 => index - 1,
            _ => return,
        };
        if self.recalling.is_none() {
            self.stash = Some(self.text());
        }
        self.recall(previous);
    }

    /// Down a line; on the last line, the next history entry (and finally
    /// the text that was being typed).
    pub fn down(&mut self) {
        if self.row + 1 < self.lines.len() {
            self.row += 1;
            self.column = self.column.min(self.lines[self.row].len());
            return;
        }
        match self.recalling {
            Some(index) if index + 1 < self.history.len() => self.recall(index + 1),
            Some(_) => {
                let stash = self.stash.take().unwrap_or_default();
                self.set_text(&stash);
                self.recalling = None;
            }
            None => {}
        }
    }

    fn recall(&mut self, index: usize) {
        let entry = self.history[index].clone();
        self.set_text(&entry);
        self.recalling = Some(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_newlines_and_backspace_across_lines() {
        let mut editor = Editor::new();
        editor.insert("hello");
        editor.newline();
        editor.insert("world");
        assert_eq!(editor.text(), "hello\nworld");
        assert_eq!(editor.cursor(), (1, 5));
        for _ in 0..6 {
            editor.backspace();
        }
        assert_eq!(editor.text(), "hello");
        assert_eq!(editor.cursor(), (0, 5));
    }

    #[test]
    fn control_characters_from_a_paste_are_dropped() {
        let mut editor = Editor::new();
        editor.insert("a\u{1b}[31mb\r\nc");
        assert_eq!(editor.text(), "a[31mb\nc");
    }

    #[test]
    fn history_recalls_and_returns_to_the_fresh_text() {
        let mut editor = Editor::new();
        editor.insert("first");
        assert_eq!(editor.take(), "first");
        editor.insert("second");
        editor.take();
        editor.insert("draft");
        editor.up();
        assert_eq!(editor.text(), "second");
        editor.up();
        assert_eq!(editor.text(), "first");
        editor.up();
        assert_eq!(editor.text(), "first");
        editor.down();
        assert_eq!(editor.text(), "second");
        editor.down();
        assert_eq!(editor.text(), "draft");
    }

    #[test]
    fn delete_word_removes_the_word_before_the_cursor() {
        let mut editor = Editor::new();
        editor.insert("see you  later");
        editor.delete_word();
        assert_eq!(editor.text(), "see you  ");
        editor.delete_word();
        assert_eq!(editor.text(), "see ");
    }
}
