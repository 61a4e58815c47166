//! The network worker: a thread that owns the unlocked profile and the
//! relay connection. It keeps the connection up (reconnecting with
//! backoff), carries out requests in order (queued while offline, so
//! nothing typed is lost), processes live deliveries and sends the screen a
//! fresh [`Snapshot`] after every change.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use hush_client::{Client, ClientError, Draft, Session};
use hush_proto::AccountId;
use hush_store::StoreError;
use rand::Rng;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::model::{Action, Link, Me, OpenConversation, Report, Request, Snapshot};

/// First wait after a lost connection; doubled each failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Messages of the open conversation sent to the screen.
const SHOWN_MESSAGES: usize = 500;
/// How often expired messages are purged.
const PURGE_EVERY: Duration = Duration::from_secs(1);
/// How often `hush chat` checks for groups owed a self-update.
const UPDATE_CHECK_EVERY: Duration = Duration::from_secs(60);

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
    let mut worker = Worker {
        client: &client,
        me,
        reports: reports.clone(),
        open: None,
        locked: false,
        jobs: VecDeque::new(),
    };
    worker.snapshot();
    let result = worker.connect_loop(&mut requests).await;
    drop(worker);
    let report = match result {
        Ok(()) => return,
        Err(ClientError::WipeOrdered) => match client.wipe() {
            Ok(()) => Report::Wiped(None),
            Err(error) => Report::Fatal(format!("a wipe order arrived but the wipe failed: {error}")),
        },
        Err(error) => Report::Fatal(error.to_string()),
    };
    let _ = reports.send(report);
}

/// What a failed unlock tells the screen.
fn unlock_failure(error: ClientError) -> Report {
    match error {
        ClientError::Store(StoreError::WrongPassphrase) => Report::WrongPassphrase,
        ClientError::Store(StoreError::Wiped(code)) => Report::Wiped(code),
        ClientError::Store(StoreError::NoProfile) => Report::Wiped(None),
        error => Report::Fatal(error.to_string()),
    }
}

/// Work that needs the relay, done in order.
enum Job {
    Send { local_id: u64, to: String, draft: Draft },
    Act(Action),
}

/// Whether to go on after a request.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Worker<'a> {
    client: &'a Client,
    me: Me,
    reports: UnboundedSender<Report>,
    open: Option<String>,
    locked: bool,
    jobs: VecDeque<Job>,
}

/// Errors that mean the connection is gone (retry), not that a job failed.
fn is_link_error(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Unreachable(_)
            | ClientError::Transport(_)
            | ClientError::Disconnected
            | ClientError::Protocol(_)
            | ClientError::WrongCertificate
    )
}

impl<'a> Worker<'a> {
    fn report(&self, report: Report) {
        let _ = self.reports.send(report);
    }

    /// Logs in, serves, and on a lost connection waits and tries again.
    async fn connect_loop(&mut self, requests: &mut UnboundedReceiver<Request>) -> Result<(), ClientError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.report(Report::Link(Link::Connecting));
            let error = match Session::login(self.client).await {
                Ok(mut session) => {
                    backoff = FIRST_BACKOFF;
                    self.report(Report::Link(Link::Online));
                    let served = self.serve(&mut session, requests).await;
                    if matches!(served, Ok(Flow::Stop)) {
                        session.close().await;
                        return Ok(());
                    }
                    match served {
                        Err(error) => error,
                        Ok(_) => ClientError::Disconnected,
                    }
                }
                Err(error) => error,
            };
            if matches!(error, ClientError::WipeOrdered | ClientError::Store(_)) {
                return Err(error);
            }
            let wait = jittered(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if self.wait_offline(&error.to_string(), wait, requests).await == Flow::Stop {
                return Ok(());
            }
        }
    }

    /// Waits `wait` before the next attempt, handling requests meanwhile and
    /// counting down in the status bar.
    async fn wait_offline(
        &mut self,
        reason: &str,
        wait: Duration,
        requests: &mut UnboundedReceiver<Request>,
    ) -> Flow {
        let deadline = Instant::now() + wait;
        let mut second = tokio::time::interval(Duration::from_secs(1));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Flow::Continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(left) => return Flow::Continue,
                _ = second.tick() => {
                    let retry_in_secs = left.as_secs_f64().ceil() as u64;
                    self.report(Report::Link(Link::Offline { reason: reason.to_owned(), retry_in_secs }));
                }
                request = requests.recv() => match request {
                    Some(request) => {
                        if self.handle(request) == Flow::Stop {
                            return Flow::Stop;
                        }
                    }
                    None => return Flow::Stop,
                },
            }
        }
    }

    /// Runs queued jobs, then waits for a request, a push or the purge
    /// timer. A lost connection returns its error, with the job still queued.
    async fn serve(
        &mut self,
        session: &mut Session<'_>,
        requests: &mut UnboundedReceiver<Request>,
    ) -> Result<Flow, ClientError> {
        session.subscribe().await?;
        let mut purge = tokio::time::interval(PURGE_EVERY);
        // The first check runs when the queue is drained (handle_push);
        // this one every minute after.
        let mut updates =
            tokio::time::interval_at(tokio::time::Instant::now() + UPDATE_CHECK_EVERY, UPDATE_CHECK_EVERY);
        let mut closing = false;
        loop {
            self.run_jobs(session).await?;
            if closing {
                return Ok(Flow::Stop);
            }
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => {
                        if self.handle(request) == Flow::Stop {
                            return Ok(Flow::Stop);
                        }
                    }
                    // The screen closed: send what is queued, then stop.
                    None => closing = true,
                },
                push = session.next_push() => {
                    session.handle_push(push?).await?;
                    self.snapshot();
                }
                _ = purge.tick() => {
                    if self.client.purge_expired()? > 0 {
                        self.snapshot();
                    }
                }
                // Groups this device only reads still rotate its keys, and
                // key packages rotate and expire.
                _ = updates.tick() => {
                    session.housekeeping().await?;
                }
            }
        }
    }

    async fn run_jobs(&mut self, session: &mut Session<'_>) -> Result<(), ClientError> {
        while let Some(job) = self.jobs.front() {
            let outcome = match job {
                Job::Send { to, draft, .. } => session.send_draft(to, draft).await.map(|()| String::new()),
                Job::Act(action) => self.act(session, action).await,
            };
            match outcome {
                Err(error) if is_link_error(&error) || matches!(error, ClientError::WipeOrdered) => {
                    return Err(error)
                }
                outcome => {
                    let job = self.jobs.pop_front();
                    self.settle(job, outcome);
                    self.snapshot();
                }
            }
        }
        Ok(())
    }

    fn settle(&self, job: Option<Job>, outcome: Result<String, ClientError>) {
        match (job, outcome) {
            (Some(Job::Send { local_id, .. }), Ok(_)) => self.report(Report::Sent(local_id)),
            (Some(Job::Send { local_id, .. }), Err(error)) => {
                self.report(Report::SendFailed(local_id, error.to_string()))
            }
            (_, Ok(done)) => self.report(Report::Done(done)),
            (_, Err(error)) => self.report(Report::Failed(error.to_string())),
        }
    }

    fn members(&self, members: &[String]) -> Result<Vec<AccountId>, ClientError> {
        members.iter().map(|member| self.client.resolve_member(member)).collect()
    }

    async fn act(&self, session: &mut Session<'_>, action: &Action) -> Result<String, ClientError> {
        match action {
            Action::Start { account, name } => {
                let id: AccountId = account
                    .parse()
                    .map_err(|_| ClientError::Invalid(format!("'{account}' is not an account id")))?;
                if let Some(name) = name {
                    self.client.add_contact(name, id)?;
                }
                let to = name.as_deref().unwrap_or(account);
                session.start_conversation(to).await?;
                Ok(format!("conversation with {to} started"))
            }
            Action::Contact { name, .. } => Ok(format!("contact {name} saved")),
            Action::GroupCreate { name, members } => {
                session.group_create(name, &self.members(members)?).await?;
                Ok(format!("group {name} created"))
            }
            Action::GroupAdd { name, members } => {
                session.group_add(name, &self.members(members)?).await?;
                Ok(format!("added to {name}: {}", members.join(", ")))
            }
            Action::GroupRemove { name, members } => {
                session.group_remove(name, &self.members(members)?).await?;
                Ok(format!("removed from {name}: {}", members.join(", ")))
            }
            Action::Timer { to, secs } => {
                session.set_timer(to, *secs).await?;
                Ok("timer set".into())
            }
            Action::Members { .. } | Action::Accept { .. } | Action::Decline { .. } => self.local(action),
        }
    }

    /// Actions on this device alone, carried out at once, online or not.
    fn local(&self, action: &Action) -> Result<String, ClientError> {
        match action {
            Action::Members { to } => {
                let names: Vec<String> = self
                    .client
                    .conversation_members(to)?
                    .into_iter()
                    .map(|member| match (member.you, member.name) {
                        (true, _) => "you".to_owned(),
                        (false, Some(name)) => name,
                        (false, None) => member.account.to_string(),
                    })
                    .collect();
                Ok(format!("members: {}", names.join(", ")))
            }
            Action::Accept { to } => self.client.accept_request(to).map(|()| format!("{to} accepted")),
            Action::Decline { to } => self.client.decline_request(to).map(|()| format!("{to} declined")),
            _ => Err(ClientError::Invalid("this needs the relay".into())),
        }
    }

    /// Handles a request at once; work for the relay is queued.
    fn handle(&mut self, request: Request) -> Flow {
        match request {
            Request::Open(name) => {
                self.open = name;
                self.snapshot();
            }
            Request::Send { local_id, to, text } => {
                self.jobs.push_back(Job::Send { local_id, to, draft: Draft::new(&text, None) })
            }
            Request::Act(Action::Contact { name, account }) => {
                let saved = account
                    .parse::<AccountId>()
                    .map_err(|_| ClientError::Invalid(format!("'{account}' is not an account id")))
                    .and_then(|id| self.client.add_contact(&name, id));
                self.settle(None, saved.map(|()| format!("contact {name} saved")));
                self.snapshot();
            }
            Request::Act(
                action @ (Action::Members { .. } | Action::Accept { .. } | Action::Decline { .. }),
            ) => {
                let outcome = self.local(&action);
                self.settle(None, outcome);
                self.snapshot();
            }
            Request::Act(action) => self.jobs.push_back(Job::Act(action)),
            Request::Lock => self.locked = true,
            Request::CheckPassphrase(passphrase) => return self.check(passphrase),
        }
        Flow::Continue
    }

    fn check(&mut self, passphrase: Zeroizing<String>) -> Flow {
        match self.client.check_passphrase(passphrase.as_bytes()) {
            Ok(()) => {
                self.locked = false;
                self.report(Report::Unlocked(self.me.clone()));
                self.snapshot();
                Flow::Continue
            }
            Err(error) => {
                let report = unlock_failure(error);
                let stop = matches!(report, Report::Wiped(_) | Report::Fatal(_));
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
    fn snapshot(&self) {
        if self.locked {
            return;
        }
        match self.read_snapshot() {
            Ok(snapshot) => self.report(Report::Snapshot(snapshot)),
            Err(error) => self.report(Report::Failed(error.to_string())),
        }
    }

    fn read_snapshot(&self) -> Result<Snapshot, ClientError> {
        let open = match &self.open {
            Some(name) => {
                // A conversation being created has no history yet.
                let messages = match self.client.recent_history(name, SHOWN_MESSAGES) {
                    Ok(messages) => messages,
                    Err(ClientError::Unknown(_)) => Vec::new(),
                    Err(error) => return Err(error),
                };
                let _ = self.client.mark_read(name);
                Some(OpenConversation { name: name.clone(), messages })
            }
            None => None,
        };
        let contacts =
            self.client.contacts()?.into_iter().map(|(name, account)| (name, account.to_string())).collect();
        Ok(Snapshot { contacts, conversations: self.client.conversation_summaries()?, open })
    }
}

/// `base` give or take a fifth, so clients that lost the relay together do
/// not all come back in the same instant.
fn jittered(base: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range(0.8..1.2);
    base.mul_f64(factor)
}
