//! The screen's side of the messenger: a thread that unlocks the profile,
//! starts a [`Messenger`] on it (which keeps the connection up, queues
//! what is typed while offline and keeps unsent messages in the profile's
//! outbox), turns the screen's requests into jobs and reads, and sends the
//! screen a fresh [`Snapshot`] after every change.

use std::collections::HashMap;
use std::path::PathBuf;

use hush_client::{Client, ClientError, Job, Messenger, Ticket, Update};
use hush_proto::AccountId;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use zeroize::Zeroizing;

use crate::model::{Action, Me, OpenConversation, Report, Request, Snapshot};

/// Messages of the open conversation sent to the screen.
const SHOWN_MESSAGES: usize = 500;

/// Starts the worker: it opens the profile with `passphrase` and reports
/// `Unlocked`, `WrongPassphrase` or `Wiped`; it stops when `requests` is
/// dropped (after sending what is queued, if online) or the profile is gone.
pub fn spawn(
    dir: PathBuf,
    passphrase: Zeroizing<String>,
    reports: UnboundedSender<Report>,
) -> Result<(UnboundedSender<Request>, std::thread::JoinHandle<()>), std::io::Error> {
    let (sender, requests) = tokio::sync::mpsc::unbounded_channel();
    let thread = std::thread::Builder::new().name("hush-worker".into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(run(dir, passphrase, requests, reports)),
            Err(error) => {
                let _ = reports.send(Report::Fatal(format!("cannot start the network worker: {error}")));
            }
        }
    })?;
    Ok((sender, thread))
}

async fn run(
    dir: PathBuf,
    passphrase: Zeroizing<String>,
    mut requests: UnboundedReceiver<Request>,
    reports: UnboundedSender<Report>,
) {
    let opened = Client::open(&dir, passphrase.as_bytes());
    drop(passphrase);
    let client = match opened {
        Ok(client) => client,
        Err(error) => {
            let _ = reports.send(unlock_failure(error));
            return;
        }
    };
    let me = Me { account: client.account().to_string(), name: client.name().unwrap_or_default() };
    let _ = reports.send(Report::Unlocked(me.clone()));
    let (messenger, mut updates) = match Messenger::start(client) {
        Ok(started) => started,
        Err(error) => {
            let _ = reports.send(Report::Fatal(error.to_string()));
            return;
        }
    };
    let mut screen = Screen { messenger, reports, me, open: None, locked: false, sends: HashMap::new() };
    screen.snapshot().await;
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(request) => {
                    if screen.handle(request).await == Flow::Stop {
                        screen.messenger.abort();
                        return;
                    }
                }
                // The screen closed: the messenger sends what is queued
                // (if online), then stops.
                None => {
                    screen.messenger.close();
                    return;
                }
            },
            update = updates.recv() => match update {
                Some(update) => {
                    if screen.update(update).await == Flow::Stop {
                        return;
                    }
                }
                None => return,
            },
        }
    }
}

/// What a failed unlock tells the screen.
fn unlock_failure(error: ClientError) -> Report {
    if error.is_wrong_passphrase() {
        Report::WrongPassphrase
    } else if error.is_profile_gone() {
        Report::Wiped
    } else {
        Report::Fatal(error.to_string())
    }
}

/// Whether to go on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Screen {
    messenger: Messenger,
    reports: UnboundedSender<Report>,
    me: Me,
    open: Option<String>,
    locked: bool,
    /// The screen's id of each message handed to the messenger.
    sends: HashMap<Ticket, u64>,
}

impl Screen {
    fn report(&self, report: Report) {
        let _ = self.reports.send(report);
    }

    async fn update(&mut self, update: Update) -> Flow {
        match update {
            Update::Link(link) => self.report(Report::Link(link)),
            Update::Changed => self.snapshot().await,
            Update::Done { ticket, outcome } => {
                let report = match (self.sends.remove(&ticket), outcome) {
                    (Some(local_id), Ok(_)) => Report::Sent(local_id),
                    (Some(local_id), Err(error)) => Report::SendFailed(local_id, error),
                    (None, Ok(done)) => Report::Done(done),
                    (None, Err(error)) => Report::Failed(error),
                };
                self.report(report);
            }
            Update::Wiped => {
                self.report(Report::Wiped);
                return Flow::Stop;
            }
            Update::Fatal(error) => {
                self.report(Report::Fatal(error));
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Handles a request at once; work for the relay goes to the messenger.
    async fn handle(&mut self, request: Request) -> Flow {
        match request {
            Request::Open(name) => {
                self.open = name;
                self.snapshot().await;
            }
            Request::Send { local_id, to, text } => {
                let ticket = self.messenger.submit(Job::Send { to, text });
                self.sends.insert(ticket, local_id);
            }
            Request::Act(Action::Relay(job)) => drop(self.messenger.submit(job)),
            Request::Act(action) => {
                match self.local(action).await {
                    Ok(done) => self.report(Report::Done(done)),
                    Err(error) => self.report(Report::Failed(error.to_string())),
                }
                self.snapshot().await;
            }
            Request::Lock => self.locked = true,
            Request::CheckPassphrase(passphrase) => return self.check(passphrase).await,
        }
        Flow::Continue
    }

    /// Actions on this device alone, carried out at once, online or not.
    async fn local(&self, action: Action) -> Result<String, ClientError> {
        let read = self.messenger.read(move |client| match action {
            Action::Contact { name, account } => account
                .parse::<AccountId>()
                .map_err(|_| ClientError::Invalid(format!("'{account}' is not an account id")))
                .and_then(|id| client.add_contact(&name, id))
                .map(|()| format!("contact {name} saved")),
            Action::Members { to } => {
                let names: Vec<String> = client
                    .conversation_members(&to)?
                    .into_iter()
                    .map(|member| match (member.you, member.name) {
                        (true, _) => "you".to_owned(),
                        (false, Some(name)) => name,
                        (false, None) => member.account.to_string(),
                    })
                    .collect();
                Ok(format!("members: {}", names.join(", ")))
            }
            Action::Accept { to } => client.accept_request(&to).map(|()| format!("{to} accepted")),
            Action::Decline { to } => client.decline_request(&to).map(|()| format!("{to} declined")),
            Action::Relay(_) => Err(ClientError::Invalid("this needs the relay".into())),
        });
        read.await?
    }

    async fn check(&mut self, passphrase: Zeroizing<String>) -> Flow {
        let checked = self.messenger.read(move |client| client.check_passphrase(passphrase.as_bytes())).await;
        match checked.and_then(|checked| checked) {
            Ok(()) => {
                self.locked = false;
                self.report(Report::Unlocked(self.me.clone()));
                self.snapshot().await;
                Flow::Continue
            }
            Err(error) => {
                let report = unlock_failure(error);
                let stop = matches!(report, Report::Wiped | Report::Fatal(_));
                self.report(report);
                if stop {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            }
        }
    }

    /// Sends the screen what it shows, unless it is locked.
    async fn snapshot(&self) {
        if self.locked {
            return;
        }
        let open = self.open.clone();
        match self.messenger.read(move |client| read_snapshot(client, open)).await {
            Ok(Ok(snapshot)) => self.report(Report::Snapshot(snapshot)),
            Ok(Err(error)) | Err(error) => self.report(Report::Failed(error.to_string())),
        }
    }
}

fn read_snapshot(client: &Client, open: Option<String>) -> Result<Snapshot, ClientError> {
    let open = match open {
        Some(name) => {
            // A conversation being created has no history yet.
            let messages = match client.recent_history(&name, SHOWN_MESSAGES) {
                Ok(messages) => messages,
                Err(ClientError::Unknown(_)) => Vec::new(),
                Err(error) => return Err(error),
            };
            let _ = client.mark_read(&name);
            Some(OpenConversation { name, messages })
        }
        None => None,
    };
    let contacts =
        client.contacts()?.into_iter().map(|(name, account)| (name, account.to_string())).collect();
    let contact_code = client.contact_code()?.map(|code| code.to_string());
    Ok(Snapshot { contacts, conversations: client.conversation_summaries()?, open, contact_code })
}
