//! The runtime: the terminal (alternate screen, so nothing stays in the
//! scrollback), the key reader thread, the worker, and the loop that feeds
//! events to [`App::update`] and carries out its effects.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use ratatui::crossterm::event::{self, DisableBracketedPaste, EnableBracketedPaste};
use ratatui::crossterm::execute;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use zeroize::Zeroizing;

use crate::app::{App, Effect, Event};
use crate::model::{Report, Request};
use crate::{view, worker};

/// How `hush chat` starts.
pub struct Options {
    /// The profile directory.
    pub dir: PathBuf,
    /// A conversation to open straight away.
    pub open: Option<String>,
    /// Idle time before the screen locks itself (`None`: never).
    pub lock_after: Option<Duration>,
    /// A passphrase given by the environment, tried first.
    pub passphrase: Option<Zeroizing<String>>,
}

/// How `hush chat` ended.
#[derive(Debug)]
pub enum Outcome {
    /// The person left.
    Quit,
    /// The profile was wiped (panic passphrase, too many wrong passphrases
    /// or a verified remote wipe order); a panic wipe was announced to the
    /// relay already.
    Wiped,
}

/// What can stop the client.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// The terminal failed.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// The worker hit something it cannot go on from.
    #[error("{0}")]
    Fatal(String),
}

/// How often the idle lock and the clock are checked.
const TICK: Duration = Duration::from_secs(1);
/// How long leaving may wait for queued messages to go out.
const FLUSH_ON_QUIT: Duration = Duration::from_secs(5);

/// Runs the client until the person leaves or the profile is wiped.
pub fn run(options: Options) -> Result<Outcome, TuiError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut terminal = ratatui::try_init()?;
    execute!(std::io::stdout(), EnableBracketedPaste)?;
    let result = runtime.block_on(main_loop(&mut terminal, options));
    let _ = execute!(std::io::stdout(), DisableBracketedPaste);
    ratatui::restore();
    let _ = std::io::stdout().flush();
    result
}

fn now_ms() -> u64 {
    hush_client::now_ms()
}

/// Reads keys on a thread of its own (crossterm's read blocks).
fn spawn_key_reader(events: UnboundedSender<Event>) -> Result<(), std::io::Error> {
    std::thread::Builder::new().name("hush-keys".into()).spawn(move || loop {
        let event = match event::read() {
            Ok(event::Event::Key(key)) => Event::Key(key),
            Ok(event::Event::Paste(text)) => Event::Paste(text),
            Ok(event::Event::Resize(..)) => Event::Tick,
            Ok(_) => continue,
            Err(_) => return,
        };
        if events.send(event).is_err() {
            return;
        }
    })?;
    Ok(())
}

struct Runtime {
    dir: PathBuf,
    reports: UnboundedSender<Report>,
    worker: Option<UnboundedSender<Request>>,
    unlocked_once: bool,
}

impl Runtime {
    /// Carries out effects; false once the client should leave.
    fn apply(&mut self, effects: Vec<Effect>) -> Result<bool, TuiError> {
        for effect in effects {
            match effect {
                Effect::Quit => return Ok(false),
                Effect::Unlock(passphrase) => match &self.worker {
                    Some(worker) => {
                        let _ = worker.send(Request::CheckPassphrase(passphrase));
                    }
                    None => {
                        let (sender, _thread) =
                            worker::spawn(self.dir.clone(), passphrase, self.reports.clone())?;
                        self.worker = Some(sender);
                    }
                },
                Effect::Request(request) => {
                    if let Some(worker) = &self.worker {
                        let _ = worker.send(request);
                    }
                }
            }
        }
        Ok(true)
    }
}

async fn main_loop(terminal: &mut DefaultTerminal, options: Options) -> Result<Outcome, TuiError> {
    let (event_sender, mut events) = unbounded_channel();
    spawn_key_reader(event_sender)?;
    let (report_sender, mut reports) = unbounded_channel();
    let mut runtime =
        Runtime { dir: options.dir, reports: report_sender, worker: None, unlocked_once: false };
    let lock_after_ms = options.lock_after.map(|d| d.as_millis() as u64);
    let mut app = App::new(now_ms(), options.open, lock_after_ms);
    if let Some(passphrase) = options.passphrase {
        app.lock.get_or_insert_with(Default::default).checking = true;
        runtime.apply(vec![Effect::Unlock(passphrase)])?;
    }
    let mut tick = tokio::time::interval(TICK);
    let outcome = loop {
        terminal.draw(|frame| view::draw(frame, &app))?;
        let event = tokio::select! {
            Some(event) = events.recv() => event,
            Some(report) = reports.recv() => match report {
                Report::Wiped => break Outcome::Wiped,
                Report::Fatal(error) => return Err(TuiError::Fatal(error)),
                Report::Unlocked(me) => {
                    runtime.unlocked_once = true;
                    Event::Report(Report::Unlocked(me))
                }
                // A failed first unlock ends the worker; the next try starts another.
                Report::WrongPassphrase if !runtime.unlocked_once => {
                    runtime.worker = None;
                    Event::Report(Report::WrongPassphrase)
                }
                report => Event::Report(report),
            },
            _ = tick.tick() => Event::Tick,
        };
        let effects = app.update(now_ms(), event);
        if !runtime.apply(effects)? || app.quit {
            break Outcome::Quit;
        }
    };
    if matches!(outcome, Outcome::Quit) {
        flush_on_quit(terminal, &mut app, runtime, &mut reports).await?;
    }
    Ok(outcome)
}

/// Leaving with messages still on their way: give the worker a moment to
/// send them (it stops once its queue is empty).
async fn flush_on_quit(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    runtime: Runtime,
    reports: &mut UnboundedReceiver<Report>,
) -> Result<(), TuiError> {
    let Runtime { worker, reports: own_sender, .. } = runtime;
    drop(own_sender);
    drop(worker);
    if app.outbox.is_empty() || app.lock.is_some() {
        return Ok(());
    }
    app.notice = Some(("sending what is queued before leaving...".into(), false));
    terminal.draw(|frame| view::draw(frame, app))?;
    let _ = tokio::time::timeout(FLUSH_ON_QUIT, async { while reports.recv().await.is_some() {} }).await;
    Ok(())
}
