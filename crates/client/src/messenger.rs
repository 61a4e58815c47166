//! The messenger: an unlocked profile kept online on a thread of its own.
//! It logs in, reconnects with backoff when the relay is lost, processes
//! deliveries as they arrive, runs the self-update and key-package upkeep,
//! and carries out work for the relay in order, keeping unsent messages in
//! an outbox in the profile so that they survive a lost connection and a
//! restart. A screen (`hush chat`) or an app embeds it through one handle,
//! [`Messenger`], which is `Send + Sync`, and one stream of [`Update`]s.
//!
//! Key design decision: the profile never leaves the messenger's thread.
//! Everything else reaches it through the handle: work for the relay as
//! [`Job`]s, reads and local changes as closures ([`Messenger::read`]) run
//! on that thread, never inside a store transaction, but possibly while a
//! job waits for the relay (a read then sees what that job did so far).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hush_proto::AccountId;
use rand::Rng;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use crate::client::Client;
use crate::error::ClientError;
use crate::session::{Draft, Session, ACCOUNT_IDLE, SEALED_IDLE};

/// First wait after a lost connection; doubled each failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often expired messages are purged.
const PURGE_EVERY: Duration = Duration::from_secs(1);
/// How often groups owed a self-update and key packages are checked.
const UPKEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the messenger logs in to check in while its logged-in
/// connection rests (see [`Session::check_in`]), give or take a fifth: an
/// idle device holds one connection at the relay, and learns of a
/// deactivation, or of an introduction from someone who knows only its
/// account id, within this time. (Wipe orders and everything sent to its
/// queues arrive at once.) 171,000 devices checking in this often cost a
/// relay about 285 logins a second, about 13% of one core (a handshake and
/// login measured at 0.44 ms of relay CPU, docs/performance.md).
const CHECK_IN_EVERY: Duration = Duration::from_secs(600);
/// A session that lasted this long resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// How long a login may take before it counts as a lost connection.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Temporary refusals of one job before it counts as failed.
const MAX_REFUSALS: u32 = 5;
/// Settings holding unsent messages, by sequence number.
const OUTBOX_PREFIX: &str = "outbox:";

/// Identifies a job handed to the messenger; its [`Update::Done`] carries it.
pub type Ticket = u64;

/// The state of the connection to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Logging in.
    Connecting,
    /// Logged in and receiving.
    Online,
    /// Lost; the next attempt is in `retry_in_secs`.
    Offline {
        /// Why.
        reason: String,
        /// Seconds until the next attempt.
        retry_in_secs: u64,
    },
}

/// Work that needs the relay, done in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Sends a text to a contact, account id or group (kept in the outbox
    /// until the relay has it or refuses it).
    Send {
        /// Contact, account id or group.
        to: String,
        /// The text.
        text: String,
    },
    /// Starts a conversation with an account, saving it as a contact first
    /// if `name` is given.
    Start {
        /// The account id.
        account: String,
        /// A contact name for it.
        name: Option<String>,
    },
    /// Creates a group.
    GroupCreate {
        /// Its name.
        name: String,
        /// Contacts or account ids.
        members: Vec<String>,
    },
    /// Adds members to a group.
    GroupAdd {
        /// The group.
        name: String,
        /// Contacts or account ids.
        members: Vec<String>,
    },
    /// Removes members from a group.
    GroupRemove {
        /// The group.
        name: String,
        /// Contacts or account ids.
        members: Vec<String>,
    },
    /// Sets or turns off a conversation's disappearing-message timer.
    Timer {
        /// The conversation.
        to: String,
        /// The timer, if any.
        secs: Option<u32>,
    },
    /// Reports a received message to the relay's operator.
    Report {
        /// The message's id (hex).
        id: String,
        /// Why, for the operator.
        reason: String,
    },
}

/// What the messenger reports.
#[derive(Debug)]
pub enum Update {
    /// The connection changed state.
    Link(Link),
    /// Something in the profile changed (a message arrived or expired, a
    /// job finished): whatever is shown should be read again.
    Changed,
    /// A job finished: what was done, or why it could not be.
    Done {
        /// The job's ticket.
        ticket: Ticket,
        /// What was done, or the error.
        outcome: Result<String, String>,
    },
    /// A genuine wipe order arrived (checked against this device's wipe
    /// secret) and the profile was wiped. Nothing else follows.
    Wiped,
    /// The messenger stopped on an error it cannot recover from (the
    /// profile's store failed, or the wipe did). Nothing else follows.
    Fatal(String),
}

type Read = Box<dyn FnOnce(&Client) + Send>;

enum Command {
    Job(Ticket, Job),
    Read(Read),
    Stop,
}

/// The handle to a running messenger. Dropping it (or [`Messenger::close`])
/// stops the messenger once the jobs already given are done, if online.
pub struct Messenger {
    commands: UnboundedSender<Command>,
    tickets: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Messenger {
    /// Starts the messenger for an unlocked profile; messages left in the
    /// outbox by an earlier run are sent first.
    pub fn start(client: Client) -> Result<(Self, UnboundedReceiver<Update>), ClientError> {
        let (commands, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (updates, stream) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("hush-messenger".into())
            .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => {
                    runtime.block_on(run(client, receiver, updates));
                    // A name lookup still hanging is not waited for.
                    runtime.shutdown_background();
                }
                Err(error) => {
                    let _ = updates.send(Update::Fatal(format!("cannot start the messenger: {error}")));
                }
            })
            .map_err(|error| ClientError::Transport(format!("cannot start the messenger: {error}")))?;
        let messenger = Self { commands, tickets: AtomicU64::new(1), thread: Mutex::new(Some(thread)) };
        Ok((messenger, stream))
    }

    /// Hands the messenger a job; its [`Update::Done`] carries the ticket
    /// returned. A [`Job::Send`] goes to the outbox as soon as the
    /// messenger takes it, which it does at once, logging in or busy with
    /// another job alike: from then on it survives a crash.
    pub fn submit(&self, job: Job) -> Ticket {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        // A stopped messenger reports nothing more; the caller learns that
        // from the end of the update stream.
        let _ = self.commands.send(Command::Job(ticket, job));
        ticket
    }

    /// Runs `read` on the profile on the messenger's thread, and returns its
    /// result: for reading what to show, and for changes on this device
    /// alone (contacts, accepting a request). It runs as soon as the
    /// messenger takes it, outside any store transaction, possibly while a
    /// job waits for the relay.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Client) -> T + Send + 'static,
    ) -> Result<T, ClientError> {
        let (answer, result) = tokio::sync::oneshot::channel();
        let read: Read = Box::new(move |client| {
            let _ = answer.send(read(client));
        });
        self.commands.send(Command::Read(read)).map_err(|_| ClientError::Disconnected)?;
        result.await.map_err(|_| ClientError::Disconnected)
    }

    /// Stops the messenger once the jobs already given are done (if
    /// online), and waits for its thread. Messages it could not send stay
    /// in the outbox for the next start.
    pub fn close(self) {
        let Self { commands, thread, .. } = self;
        drop(commands);
        join(&thread);
    }

    /// Stops the messenger as soon as it takes this, leaving queued jobs
    /// undone and cutting off the one under way (messages stay in the
    /// outbox; a commit whose answer is lost is resolved at the next login),
    /// and waits for its thread.
    pub fn abort(self) {
        let Self { commands, thread, .. } = self;
        let _ = commands.send(Command::Stop);
        drop(commands);
        join(&thread);
    }
}

fn join(thread: &Mutex<Option<std::thread::JoinHandle<()>>>) {
    let thread = thread.lock().ok().and_then(|mut thread| thread.take());
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}

async fn run(client: Client, mut commands: UnboundedReceiver<Command>, updates: UnboundedSender<Update>) {
    let jobs = match outbox(&client) {
        Ok(jobs) => jobs,
        Err(error) => {
            let _ = updates.send(Update::Fatal(error.to_string()));
            return;
        }
    };
    let mut worker = Worker { client: &client, updates: updates.clone(), jobs, closing: false };
    let result = worker.connect_loop(&mut commands).await;
    drop(worker);
    let last = match result {
        Ok(()) => return,
        // Only a wipe order that matches this device's own wipe secret
        // gets here (see `Session`); anything else the relay says is not.
        Err(ClientError::WipeOrdered) => match client.wipe() {
            Ok(()) => Update::Wiped,
            Err(error) => Update::Fatal(format!("a wipe order arrived but the wipe failed: {error}")),
        },
        Err(error) => Update::Fatal(error.to_string()),
    };
    let _ = updates.send(last);
}

/// A job in the queue: sends carry their outbox entry.
struct Queued {
    ticket: Ticket,
    job: Job,
    outbox: Option<(String, Draft)>,
    /// Tries the relay answered with a temporary refusal.
    refused: u32,
    /// Tries begun (a job tried again may have done its work already).
    tries: u32,
}

impl Client {
    /// Messages handed to a [`Messenger`] and not sent yet (the relay was
    /// unreachable, or the app stopped first), oldest first: the
    /// conversation and the text. The next messenger started sends them.
    pub fn outbox(&self) -> Result<Vec<(String, String)>, ClientError> {
        let entries = self.store.settings_with_prefix(OUTBOX_PREFIX)?;
        let decoded = entries.iter().filter_map(|(_, bytes)| decode_outbox(bytes));
        Ok(decoded.map(|(to, draft)| (to, draft.text().to_owned())).collect())
    }
}

/// Unsent messages left by an earlier run, oldest first.
fn outbox(client: &Client) -> Result<VecDeque<Queued>, ClientError> {
    let mut jobs = VecDeque::new();
    for (key, bytes) in client.store.settings_with_prefix(OUTBOX_PREFIX)? {
        match decode_outbox(&bytes) {
            Some((to, draft)) => {
                let job = Job::Send { to: to.clone(), text: draft.text().to_owned() };
                jobs.push_back(Queued { ticket: 0, job, outbox: Some((key, draft)), refused: 0, tries: 0 });
            }
            None => client.store.delete_setting(&key)?,
        }
    }
    Ok(jobs)
}

fn encode_outbox(to: &str, draft: &Draft) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&u32::try_from(to.len()).unwrap_or(u32::MAX).to_be_bytes());
    bytes.extend_from_slice(to.as_bytes());
    bytes.extend_from_slice(&draft.to_bytes());
    bytes
}

fn decode_outbox(bytes: &[u8]) -> Option<(String, Draft)> {
    let len = usize::try_from(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?)).ok()?;
    let to = std::str::from_utf8(bytes.get(4..4 + len)?).ok()?.to_owned();
    Some((to, Draft::from_bytes(bytes.get(4 + len..)?)?))
}

/// Errors that mean "not now" (retry after reconnecting), not that a job
/// failed: the connection is gone, or the relay is busy, going down or
/// cannot reach its database.
fn is_temporary(error: &ClientError) -> bool {
    use hush_proto::ErrorCode;
    matches!(
        error,
        ClientError::Unreachable(_)
            | ClientError::Transport(_)
            | ClientError::Disconnected
            | ClientError::Protocol(_)
            | ClientError::WrongCertificate
            | ClientError::Relay(
                ErrorCode::RateLimited
                    | ErrorCode::TooManyConnections
                    | ErrorCode::Internal
                    | ErrorCode::ShuttingDown
                    | ErrorCode::Unavailable
            )
    )
}

/// Whether to go on.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

struct Worker<'a> {
    client: &'a Client,
    updates: UnboundedSender<Update>,
    jobs: VecDeque<Queued>,
    /// The handle is gone: finish the queue if online, then stop.
    closing: bool,
}

impl Worker<'_> {
    fn report(&self, update: Update) {
        let _ = self.updates.send(update);
    }

    /// Logs in, serves, and on a lost connection waits and tries again.
    /// Commands are taken all along (a send is in the outbox at once).
    async fn connect_loop(&mut self, commands: &mut UnboundedReceiver<Command>) -> Result<(), ClientError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.report(Update::Link(Link::Connecting));
            let client = self.client;
            // A relay that takes the connection and never answers is a lost
            // connection, not a wait for ever.
            let login = async {
                tokio::time::timeout(LOGIN_TIMEOUT, Session::login(client)).await.map_err(|_| {
                    ClientError::Transport("the relay did not answer the login in time".into())
                })?
            };
            tokio::pin!(login);
            let logged_in = loop {
                tokio::select! {
                    logged_in = &mut login => break logged_in,
                    command = commands.recv(), if !self.closing => {
                        if self.take(command)? == Flow::Stop {
                            return Ok(());
                        }
                    }
                }
            };
            let error = match logged_in {
                Ok(mut session) => {
                    let since = Instant::now();
                    self.report(Update::Link(Link::Online));
                    let served = self.serve(&mut session, commands).await;
                    // A session that lasted is a reason to start over with
                    // a short wait; one cut off at once (a relay that lets
                    // us in and then fails) is not.
                    if since.elapsed() >= HEALTHY_SESSION {
                        backoff = FIRST_BACKOFF;
                    }
                    match served {
                        Ok(Flow::Stop) => {
                            session.close().await;
                            return Ok(());
                        }
                        Ok(Flow::Continue) => ClientError::Disconnected,
                        Err(error) => error,
                    }
                }
                Err(error) => error,
            };
            if matches!(error, ClientError::WipeOrdered | ClientError::Store(_)) {
                return Err(error);
            }
            if self.closing {
                return Ok(());
            }
            let wait = jittered(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            if self.wait_offline(&error.to_string(), wait, commands).await? == Flow::Stop {
                return Ok(());
            }
        }
    }

    /// Waits `wait` before the next attempt, taking commands meanwhile and
    /// counting down.
    async fn wait_offline(
        &mut self,
        reason: &str,
        wait: Duration,
        commands: &mut UnboundedReceiver<Command>,
    ) -> Result<Flow, ClientError> {
        let deadline = Instant::now() + wait;
        let mut second = tokio::time::interval(Duration::from_secs(1));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Flow::Continue);
            }
            tokio::select! {
                _ = tokio::time::sleep(left) => return Ok(Flow::Continue),
                _ = second.tick() => {
                    let retry_in_secs = left.as_secs_f64().ceil() as u64;
                    self.report(Update::Link(Link::Offline { reason: reason.to_owned(), retry_in_secs }));
                }
                command = commands.recv() => {
                    if self.take(command)? == Flow::Stop || self.closing {
                        return Ok(Flow::Stop);
                    }
                }
            }
        }
    }

    /// Runs queued jobs, then waits for a command, a delivery or a timer.
    /// A lost connection returns its error, with the job still queued.
    async fn serve(
        &mut self,
        session: &mut Session<'_>,
        commands: &mut UnboundedReceiver<Command>,
    ) -> Result<Flow, ClientError> {
        session.subscribe().await?;
        let mut purge = tokio::time::interval(PURGE_EVERY);
        // The first upkeep runs once the queue is drained (handle_push);
        // this one every minute after: groups this device only reads still
        // rotate its keys, and key packages rotate and expire.
        let mut upkeep = tokio::time::interval_at(Instant::now() + UPKEEP_EVERY, UPKEEP_EVERY);
        let mut check_in = Instant::now() + jittered(CHECK_IN_EVERY);
        loop {
            if self.run_jobs(session, commands).await? == Flow::Stop {
                return Ok(Flow::Stop);
            }
            if self.closing {
                return Ok(Flow::Stop);
            }
            // Unused sending and logged-in connections are closed (see
            // SEALED_IDLE and ACCOUNT_IDLE).
            let rest_sealed = session.sealed_idle_at(SEALED_IDLE);
            let rest_account = session.account_idle_at(ACCOUNT_IDLE);
            tokio::select! {
                command = commands.recv() => {
                    if self.take(command)? == Flow::Stop {
                        return Ok(Flow::Stop);
                    }
                }
                _ = until(rest_sealed) => session.rest_sealed(SEALED_IDLE).await,
                _ = until(rest_account) => session.rest_account(ACCOUNT_IDLE).await,
                _ = tokio::time::sleep_until(check_in) => {
                    session.check_in().await?;
                    check_in = Instant::now() + jittered(CHECK_IN_EVERY);
                    self.report(Update::Changed);
                }
                push = session.next_push() => {
                    session.handle_push(push?).await?;
                    self.report(Update::Changed);
                }
                _ = purge.tick() => {
                    if self.client.purge_expired()? > 0 {
                        self.report(Update::Changed);
                    }
                }
                _ = upkeep.tick() => session.housekeeping().await?,
            }
        }
    }

    /// Takes a command (`None`: the handle is gone). A read runs at once; a
    /// job is queued, a send after it is in the outbox.
    fn take(&mut self, command: Option<Command>) -> Result<Flow, ClientError> {
        match command {
            None => self.closing = true,
            Some(Command::Stop) => return Ok(Flow::Stop),
            Some(Command::Read(read)) => {
                // A read that panics may have left the profile half-way
                // through something: stop rather than go on with it.
                let client = self.client;
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(client))).is_err() {
                    self.report(Update::Fatal("a read of the profile failed; the messenger stopped".into()));
                    return Ok(Flow::Stop);
                }
            }
            Some(Command::Job(ticket, job)) => {
                let outbox = match &job {
                    Job::Send { to, text } => {
                        let draft = Draft::new(text, None);
                        let key = format!("{OUTBOX_PREFIX}{:016x}", self.next_outbox_seq()?);
                        self.client.store.set_setting(&key, &encode_outbox(to, &draft))?;
                        Some((key, draft))
                    }
                    _ => None,
                };
                self.jobs.push_back(Queued { ticket, job, outbox, refused: 0, tries: 0 });
            }
        }
        Ok(Flow::Continue)
    }

    /// The next outbox entry's number (entries are sent in this order).
    fn next_outbox_seq(&self) -> Result<u64, ClientError> {
        let store = &self.client.store;
        let last = store.setting("outbox_seq")?.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok());
        let next = last.map_or(1, |bytes| u64::from_be_bytes(bytes).wrapping_add(1));
        store.set_setting("outbox_seq", &next.to_be_bytes())?;
        Ok(next)
    }

    /// Runs the queue in order, taking commands while a job is under way.
    /// A temporary failure leaves the job at the head of the queue (its
    /// message in the outbox) and returns, to reconnect.
    async fn run_jobs(
        &mut self,
        session: &mut Session<'_>,
        commands: &mut UnboundedReceiver<Command>,
    ) -> Result<Flow, ClientError> {
        let client = self.client;
        while let Some(queued) = self.jobs.front_mut() {
            queued.tries += 1;
            let retry = queued.tries > 1;
            let job = queued.job.clone();
            let draft = queued.outbox.as_ref().map(|(_, draft)| draft.clone());
            let work = run_job(client, session, job, draft, retry);
            tokio::pin!(work);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut work => break outcome,
                    command = commands.recv(), if !self.closing => {
                        // Stopping cuts the job off: a message stays in the
                        // outbox, a commit is resolved at the next login.
                        if self.take(command)? == Flow::Stop {
                            return Ok(Flow::Stop);
                        }
                    }
                }
            };
            // A relay that keeps refusing or garbling one job must not hold
            // up the queue for ever: after a few tries it is a failure.
            let answered = matches!(outcome, Err(ClientError::Relay(_) | ClientError::Protocol(_)));
            let refused = self.jobs.front().map_or(0, |queued| queued.refused) + u32::from(answered);
            if let Some(queued) = self.jobs.front_mut() {
                queued.refused = refused;
            }
            match outcome {
                Err(error) if is_temporary(&error) && refused < MAX_REFUSALS => return Err(error),
                // The profile failed or must be wiped: the message stays.
                Err(error @ (ClientError::WipeOrdered | ClientError::Store(_))) => return Err(error),
                outcome => {
                    let Some(Queued { ticket, job, outbox, .. }) = self.jobs.pop_front() else { break };
                    if let Some((key, _)) = &outbox {
                        self.client.store.delete_setting(key)?;
                    }
                    let outcome = outcome.map_err(|error| match (&job, ticket) {
                        // Left by an earlier run: say which message failed.
                        (Job::Send { to, text }, 0) => format!("message to {to} not sent ({error}): {text}"),
                        _ => error.to_string(),
                    });
                    self.report(Update::Done { ticket, outcome });
                    self.report(Update::Changed);
                }
            }
        }
        Ok(Flow::Continue)
    }
}

/// True if none of `accounts` is in the group `name` any more. A removal
/// tried again after its connection broke may have done its work the first
/// time: its commit was ordered, and resolved at the next login. (Creating
/// and adding finish an earlier try by themselves.)
fn already_removed(client: &Client, name: &str, accounts: &[AccountId]) -> Result<bool, ClientError> {
    let Ok(members) = client.group_members(name) else { return Ok(false) };
    Ok(accounts.iter().all(|account| members.iter().all(|member| member.account != *account)))
}

/// Carries out one job over a session; `retry` if it was begun before.
async fn run_job(
    client: &Client,
    session: &mut Session<'_>,
    job: Job,
    draft: Option<Draft>,
    retry: bool,
) -> Result<String, ClientError> {
    let members = |members: &[String]| -> Result<Vec<AccountId>, ClientError> {
        members.iter().map(|member| client.resolve_member(member)).collect()
    };
    match job {
        Job::Send { to, text } => {
            match draft {
                Some(draft) => session.send_draft(&to, &draft).await?,
                None => session.send_text(&to, &text, None).await?,
            }
            Ok(String::new())
        }
        Job::Start { account, name } => {
            let id: AccountId = account
                .parse()
                .map_err(|_| ClientError::Invalid(format!("'{account}' is not an account id")))?;
            if let Some(name) = &name {
                client.add_contact(name, id)?;
            }
            let to = name.as_deref().unwrap_or(&account);
            session.start_conversation(to).await?;
            Ok(format!("conversation with {to} started"))
        }
        Job::GroupCreate { name, members: names } => {
            session.group_create(&name, &members(&names)?).await?;
            Ok(format!("group {name} created"))
        }
        Job::GroupAdd { name, members: names } => {
            session.group_add(&name, &members(&names)?).await?;
            Ok(format!("added to {name}: {}", names.join(", ")))
        }
        Job::GroupRemove { name, members: names } => {
            let accounts = members(&names)?;
            if !(retry && already_removed(client, &name, &accounts)?) {
                session.group_remove(&name, &accounts).await?;
            }
            Ok(format!("removed from {name}: {}", names.join(", ")))
        }
        Job::Timer { to, secs } => {
            session.set_timer(&to, secs).await?;
            Ok("timer set".into())
        }
        Job::Report { id, reason } => {
            let reported = session.report(&id, &reason).await?;
            let sender = client.display_name(&reported.from)?;
            // Which message went, so that one that arrived while the
            // command was typed is not reported unnoticed.
            let mut said: String = reported.text.chars().take(40).collect();
            if said.len() < reported.text.len() {
                said.push('…');
            }
            Ok(format!("reported to the relay's operator: {sender}: {}", crate::display::escape(&said)))
        }
    }
}

/// `base` give or take a fifth, so clients that lost the relay together do
/// not all come back in the same instant.
fn jittered(base: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range(0.8..1.2);
    base.mul_f64(factor)
}

/// Waits until `at`, or for ever if there is no `at`.
async fn until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
