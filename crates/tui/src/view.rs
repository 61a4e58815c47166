//! Drawing the state. Nothing here changes it; nothing relies on colour
//! (marks and words carry every meaning, reverse video only helps).

use chrono::{DateTime, Local, TimeZone};
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthChar;

use crate::app::{App, Delivery, Focus, LockScreen, Overlay};
use crate::command::COMMANDS;
use crate::model::Link;

/// Narrower than this, the list and the messages take turns.
const SIDE_BY_SIDE: u16 = 60;
/// Width of the conversation list.
const LIST_WIDTH: u16 = 24;
/// Most lines the input box grows to.
const INPUT_LINES: usize = 5;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if let Some(lock) = &app.lock {
        draw_lock(frame, area, lock, app.me.is_some());
        return;
    }
    let input_height = app.editor.lines().len().clamp(1, INPUT_LINES) as u16 + 2;
    let [status, body, input, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(input_height),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_status(frame, status, app);
    let show_list = area.width >= SIDE_BY_SIDE || app.open.is_none() || app.focus == Focus::List;
    let show_messages = area.width >= SIDE_BY_SIDE || !show_list;
    match (show_list, show_messages) {
        (true, true) => {
            let [list, messages] =
                Layout::horizontal([Constraint::Length(LIST_WIDTH), Constraint::Min(10)]).areas(body);
            draw_list(frame, list, app);
            draw_messages(frame, messages, app);
        }
        (true, false) => draw_list(frame, body, app),
        _ => draw_messages(frame, body, app),
    }
    draw_input(frame, input, app);
    draw_hints(frame, hints, app);
    match &app.overlay {
        Some(Overlay::Help) => draw_help(frame, area),
        Some(Overlay::AccountId { title, account }) => draw_account(frame, area, title, account),
        Some(Overlay::ContactCode { title, code }) => draw_contact_code(frame, area, title, code),
        None => {}
    }
}

fn draw_lock(frame: &mut Frame, area: Rect, lock: &LockScreen, relock: bool) {
    let title = if relock { " Hush is locked " } else { " Hush " };
    let status = if lock.checking {
        "checking...".to_owned()
    } else {
        lock.error.clone().map(|e| format!("! {e}")).unwrap_or_default()
    };
    let lines = vec![
        Line::raw(""),
        Line::raw(" Passphrase (typing is hidden):"),
        Line::raw(""),
        Line::raw(format!(" {status}")),
        Line::raw(""),
        Line::raw(" Enter unlock   Esc clear   Ctrl-C quit"),
    ];
    let inner = centered(area, 44, 8);
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), inner);
    // The cursor stays put while typing: not even the length shows.
    frame.set_cursor_position(Position::new(inner.x + 2, inner.y + 3));
}

fn draw_status(frame: &mut Frame, area: Rect, app: &App) {
    let me = app.me.as_ref().map(|me| me.name.as_str()).unwrap_or("");
    let link = match &app.link {
        Link::Connecting => "connecting...".to_owned(),
        Link::Online => "online".to_owned(),
        Link::Offline { reason, retry_in_secs } => format!("OFFLINE ({reason}); retry in {retry_in_secs}s"),
    };
    let mut text = format!(" hush | {me} | {link}");
    if let Some(open) = &app.open {
        text.push_str(&format!(" | {open}"));
        let summary = app.snapshot.conversations.iter().find(|c| &c.name == open);
        if let Some(secs) = summary.and_then(|s| s.timer_secs) {
            text.push_str(&format!(
                " | timer {}",
                humantime::format_duration(std::time::Duration::from_secs(secs.into()))
            ));
        }
        if summary.is_some_and(|s| s.request) {
            text.push_str(" | request: /accept or /decline");
        }
    }
    let style = Style::default().add_modifier(Modifier::REVERSED);
    frame.render_widget(Paragraph::new(fit(&text, area.width as usize)).style(style), area);
}

fn draw_list(frame: &mut Frame, area: Rect, app: &App) {
    let width = area.width.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    if app.snapshot.conversations.is_empty() {
        lines.push(Line::raw(fit("no conversations:", width)));
        lines.push(Line::raw(fit("/new ACCOUNT [NAME]", width)));
    }
    for (index, conversation) in app.snapshot.conversations.iter().enumerate() {
        let selected = index == app.selected;
        let marker = if selected && app.focus == Focus::List { ">" } else { " " };
        let kind = match (conversation.request, conversation.group) {
            (true, _) => "?",
            (false, true) => "#",
            (false, false) => "",
        };
        let unread =
            if conversation.unread > 0 { format!(" ({})", conversation.unread) } else { String::new() };
        let when = if conversation.last_activity_ms > 0 {
            short_time(app.now_ms, conversation.last_activity_ms)
        } else {
            String::new()
        };
        let name_width = width.saturating_sub(2 + unread.len() + when.len() + 1);
        let name = fit(&format!("{kind}{}", conversation.name), name_width);
        let pad = width.saturating_sub(1 + display_width(&name) + unread.len() + when.len());
        let text = format!("{marker}{name}{unread}{}{when}", " ".repeat(pad));
        let mut line = Line::raw(text);
        if Some(&conversation.name) == app.open.as_ref() || selected && app.focus == Focus::List {
            line = line.style(Style::default().add_modifier(Modifier::REVERSED));
        }
        lines.push(line);
    }
    let block = Block::bordered().title(focus_title(" Conversations ", app.focus == Focus::List));
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn focus_title(title: &str, focused: bool) -> String {
    if focused {
        format!("[{}]", title.trim())
    } else {
        title.to_owned()
    }
}

fn draw_messages(frame: &mut Frame, area: Rect, app: &App) {
    let title = app
        .open
        .as_deref()
        .map(|name| format!(" {} ", hush_client::display::strip(name, false)))
        .unwrap_or_else(|| " no conversation open ".into());
    let block = Block::bordered().title(focus_title(&title, app.focus == Focus::Messages));
    let width = area.width.saturating_sub(2) as usize;
    let height = area.height.saturating_sub(2) as usize;
    let lines = message_lines(app, width);
    let bottom = lines.len().saturating_sub(app.scroll.min(lines.len().saturating_sub(height)));
    let top = bottom.saturating_sub(height);
    let visible: Vec<Line> = lines[top..bottom].iter().map(|l| Line::raw(l.clone())).collect();
    frame.render_widget(Paragraph::new(visible).block(block), area);
}

/// Every line of the open conversation, wrapped to `width`.
fn message_lines(app: &App, width: usize) -> Vec<String> {
    let Some(open) = &app.open else {
        return vec!["Pick a conversation in the list (Enter), or type /help.".into()];
    };
    let mut lines = Vec::new();
    let messages = app.snapshot.open.as_ref().filter(|o| &o.name == open).map(|o| o.messages.as_slice());
    for message in messages.unwrap_or_default() {
        if message.expires_at_ms.is_some_and(|at| at <= app.now_ms) {
            continue;
        }
        let when = clock(message.sent_at_ms);
        let from = app.name_of(&message.from.to_string());
        let own = from == "you";
        let text = if message.event {
            format!("{when} * {}", message.text)
        } else {
            let mark = if own { " [sent]" } else { "" };
            let expiry = message
                .expires_at_ms
                .map(|at| format!(" [gone at {}]", moment(app.now_ms, at)))
                .unwrap_or_default();
            format!("{when} {from}: {}{mark}{expiry}", message.text)
        };
        lines.extend(wrap(&text, width));
    }
    for outgoing in app.outbox.iter().filter(|o| &o.to == open) {
        let state = match &outgoing.state {
            Delivery::Sending => "[sending...]".to_owned(),
            Delivery::Failed(reason) => format!("[FAILED: {reason}]"),
        };
        lines.extend(wrap(&format!("{} you: {} {state}", clock(outgoing.at_ms), outgoing.text), width));
    }
    lines
}

fn draw_input(frame: &mut Frame, area: Rect, app: &App) {
    let lines = app.editor.lines();
    let (row, column) = app.editor.cursor();
    let height = area.height.saturating_sub(2) as usize;
    let first = row.saturating_sub(height.saturating_sub(1));
    let width = area.width.saturating_sub(2) as usize;
    let before: String = lines[row].chars().take(column).collect();
    let cursor_x = display_width(&before);
    let shift = cursor_x.saturating_sub(width.saturating_sub(1));
    let visible: Vec<Line> =
        lines.iter().skip(first).take(height).map(|line| Line::raw(skip_columns(line, shift))).collect();
    let title = if app.editor.text().starts_with('/') { " Command " } else { " Message " };
    let block = Block::bordered().title(focus_title(title, app.focus == Focus::Input));
    frame.render_widget(Paragraph::new(visible).block(block), area);
    if app.focus == Focus::Input && app.overlay.is_none() {
        let x = area.x + 1 + (cursor_x - shift) as u16;
        let y = area.y + 1 + (row - first) as u16;
        frame.set_cursor_position(Position::new(x, y));
    }
}

fn draw_hints(frame: &mut Frame, area: Rect, app: &App) {
    let text = match &app.notice {
        Some((text, true)) => format!("! {text}"),
        Some((text, false)) => text.clone(),
        None => match app.focus {
            Focus::List => "j/k move  Enter open  i type  / command  Tab input  ? help  Ctrl-L lock  q quit",
            Focus::Messages => "j/k scroll  G newest  h back  i type  / command  ? help  Ctrl-L lock",
            Focus::Input => "Enter send  Alt-Enter newline  Up/Down history  Esc back  /help  F1 keys",
        }
        .to_owned(),
    };
    frame.render_widget(Paragraph::new(fit(&text, area.width as usize)), area);
}

const KEYS: &[(&str, &str)] = &[
    ("Tab", "list <-> input"),
    ("j k Up Down", "move, scroll"),
    ("Enter l Right", "open conversation"),
    ("i a", "type a message"),
    ("/ :", "type a command"),
    ("Esc h Left", "back"),
    ("Enter", "send"),
    ("Alt-Enter Ctrl-J", "new line"),
    ("Up Down (typing)", "history"),
    ("PgUp PgDn g G", "scroll messages"),
    ("Ctrl-L", "lock the screen"),
    ("q Ctrl-C", "quit"),
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let mut lines = vec![Line::raw("Keys").style(Style::default().add_modifier(Modifier::BOLD))];
    for pair in KEYS.chunks(2) {
        let cell = |(k, v): &(&str, &str)| format!(" {k:<17}{v:<20}");
        let text: String = pair.iter().map(cell).collect();
        lines.push(Line::raw(text));
    }
    lines.push(Line::raw("Commands").style(Style::default().add_modifier(Modifier::BOLD)));
    for (form, what) in COMMANDS {
        lines.push(Line::raw(format!(" {form:<23}{what}")));
    }
    let height = (lines.len() + 2) as u16;
    let rect = centered(area, 78, height);
    frame.render_widget(Clear, rect);
    frame
        .render_widget(Paragraph::new(lines).block(Block::bordered().title(" Help (any key closes) ")), rect);
}

fn draw_account(frame: &mut Frame, area: Rect, title: &str, account: &str) {
    let mut lines: Vec<Line> = qr_lines(account).into_iter().map(Line::raw).collect();
    lines.push(Line::raw(account.to_owned()));
    lines.push(Line::raw("Compare in person: the same id means the same keys."));
    let width = lines.iter().map(|l| l.width()).max().unwrap_or(0) as u16 + 2;
    let rect = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    let block =
        Block::bordered().title(format!(" {} (any key closes) ", hush_client::display::strip(title, false)));
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}

/// The contact code as a QR code (in capitals, which QR codes carry
/// compactly), and as text in two lines where the window is tall enough
/// for both (an 80 by 24 terminal has room for the QR code alone).
fn draw_contact_code(frame: &mut Frame, area: Rect, title: &str, code: &str) {
    let mut lines: Vec<Line> = contact_qr_lines(code).into_iter().map(Line::raw).collect();
    if usize::from(area.height) >= lines.len() + 2 + 3 {
        let half = code.len().div_ceil(2);
        let (first, second) = code.split_at(code.floor_char_boundary(half));
        lines.push(Line::raw(first.to_owned()));
        lines.push(Line::raw(second.to_owned()));
        lines.push(Line::raw("Add me: hush contact add NAME CODE (one line)"));
    } else {
        lines.push(Line::raw("As text: hush whoami --json, or a taller window"));
    }
    let width = lines.iter().map(|l| l.width()).max().unwrap_or(0) as u16 + 2;
    let rect = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    let block =
        Block::bordered().title(format!(" {} (any key closes) ", hush_client::display::strip(title, false)));
    frame.render_widget(Paragraph::new(lines).block(block), rect);
}

/// A contact code as a QR code: capitals (the alphanumeric mode), and a
/// margin of two modules instead of the usual four, which the dark
/// terminal around the box extends.
pub fn contact_qr_lines(code: &str) -> Vec<String> {
    use qrcode::render::unicode::Dense1x2;
    let upper = code.to_ascii_uppercase();
    match qrcode::QrCode::with_error_correction_level(upper.as_bytes(), qrcode::EcLevel::L) {
        Ok(qr) => {
            let rows: Vec<String> = qr
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .quiet_zone(false)
                .build()
                .lines()
                .map(|row| format!("  {row}  "))
                .collect();
            let blank = " ".repeat(rows.first().map_or(0, |row| row.chars().count()));
            std::iter::once(blank.clone()).chain(rows).chain(std::iter::once(blank)).collect()
        }
        Err(_) => vec!["(no QR code for this code)".into()],
    }
}

/// An account id as a QR code in half-block characters, light on dark so
/// that phones read it from a dark terminal.
pub fn qr_lines(account: &str) -> Vec<String> {
    use qrcode::render::unicode::Dense1x2;
    match qrcode::QrCode::with_error_correction_level(account.as_bytes(), qrcode::EcLevel::L) {
        Ok(code) => code
            .render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build()
            .lines()
            .map(str::to_owned)
            .collect(),
        Err(_) => vec!["(no QR code for this id)".into()],
    }
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(area.x + (area.width - width) / 2, area.y + (area.height - height) / 2, width, height)
}

fn clock(ms: u64) -> String {
    local(ms).map(|t| t.format("%H:%M").to_string()).unwrap_or_default()
}

/// "14:05" today, else "Mar 3".
fn short_time(now_ms: u64, ms: u64) -> String {
    match (local(now_ms), local(ms)) {
        (Some(now), Some(then)) if now.date_naive() == then.date_naive() => then.format("%H:%M").to_string(),
        (_, Some(then)) => then.format("%b %-d").to_string(),
        _ => String::new(),
    }
}

/// "14:05" today, else "Mar 3 14:05".
fn moment(now_ms: u64, ms: u64) -> String {
    match (local(now_ms), local(ms)) {
        (Some(now), Some(then)) if now.date_naive() != then.date_naive() => {
            then.format("%b %-d %H:%M").to_string()
        }
        _ => clock(ms),
    }
}

fn local(ms: u64) -> Option<DateTime<Local>> {
    Local.timestamp_millis_opt(i64::try_from(ms).ok()?).single()
}

fn display_width(text: &str) -> usize {
    text.chars().map(|c| c.width().unwrap_or(0)).sum()
}

/// Cuts `text` to `width` columns, without the characters a terminal
/// would act on (newlines, escape sequences, bidirectional overrides).
fn fit(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in hush_client::display::strip(text, false).chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width {
            break;
        }
        used += w;
        out.push(c);
    }
    out
}

fn skip_columns(text: &str, columns: usize) -> String {
    let mut skipped = 0;
    text.chars()
        .skip_while(|c| {
            let skip = skipped < columns;
            skipped += c.width().unwrap_or(0);
            skip
        })
        .collect()
}

/// Word-wraps `text` (which may hold newlines) to `width` columns;
/// continuation lines are indented by two spaces.
/// Characters a terminal would act on are dropped first.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(4);
    let mut lines = Vec::new();
    let text = hush_client::display::strip(text, true);
    for (index, paragraph) in text.split('\n').enumerate() {
        let mut line = if index == 0 { String::new() } else { "  ".to_owned() };
        let mut used = display_width(&line);
        for word in paragraph.split(' ') {
            let word_width = display_width(word);
            let space = usize::from(used > 2 || (index == 0 && used > 0));
            if used + space + word_width > width && used > 2 {
                lines.push(std::mem::replace(&mut line, "  ".to_owned()));
                used = 2;
            } else if space == 1 {
                line.push(' ');
                used += 1;
            }
            for c in word.chars() {
                let w = c.width().unwrap_or(0);
                if used + w > width {
                    lines.push(std::mem::replace(&mut line, "  ".to_owned()));
                    used = 2;
                }
                line.push(c);
                used += w;
            }
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests;
