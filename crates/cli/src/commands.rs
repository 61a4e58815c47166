//! What each command does, on top of hush-relay and hush-client.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hush_client::{send_wipe_order, Client, ClientError, KdfParams, Session, UpdatePolicy};
use hush_proto::{AccountId, Invite, WipeCode};
use serde_json::json;
use zeroize::Zeroizing;

use crate::cli::{
    AdminCommand, Cli, Command, ContactCommand, GroupCommand, LogFormat, PanicCommand, PassphraseCommand,
    ReleaseCommand, RequestCommand,
};
use crate::output::{json_line, print_message, visible};

pub fn run(cli: Cli) -> Result<()> {
    let home = cli.home;
    if !matches!(
        cli.command,
        Command::Serve { .. }
            | Command::Admin { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Release { .. }
    ) {
        hush_client::harden_process().context("cannot disable core dumps for this process")?;
    }
    match cli.command {
        Command::Serve { data, listen, store, metrics, log_format } => {
            let options =
                hush_relay::admin::ServeOptions { store: store.as_deref(), metrics: metrics.as_deref() };
            serve(&data, &listen, options, log_format)
        }
        Command::Admin { command } => admin(command),
        Command::Join { invite, name, max_attempts, update_every_messages, update_every, json } => {
            let policy =
                UpdatePolicy { after_messages: update_every_messages, after: parse_duration(&update_every)? };
            let invite = argument_or_stdin(invite, "invite")?;
            block_on(join(&profile_dir(home)?, &invite, name, max_attempts, policy, json))
        }
        Command::Whoami { json } => whoami(&profile_dir(home)?, json),
        Command::Contact { command } => contact(&profile_dir(home)?, command),
        Command::Send { to, text, expire } => {
            let expire = expire.map(|text| parse_secs(&text)).transpose()?;
            let text = if text.is_empty() { message_from_stdin()? } else { Zeroizing::new(text.join(" ")) };
            send(&profile_dir(home)?, &to, &text, expire)
        }
        Command::Report { id, reason } => report(&profile_dir(home)?, &id, &reason.join(" ")),
        Command::Timer { to, duration } => {
            let secs = match duration.as_str() {
                "off" | "0" => None,
                text => Some(parse_secs(text)?),
            };
            timer(&profile_dir(home)?, &to, secs)
        }
        Command::Recv { wait, json } => recv(&profile_dir(home)?, wait, json),
        Command::History { to, json } => history(&profile_dir(home)?, &to, json),
        Command::Group { command } => group(&profile_dir(home)?, command),
        Command::Requests { command, json } => requests(&profile_dir(home)?, command, json),
        Command::Panic { command: PanicCommand::Set } => panic_set(&profile_dir(home)?),
        Command::RemoteWipe { wipe_code } => remote_wipe(&argument_or_stdin(wipe_code, "wipe code")?),
        Command::Passphrase { command: PassphraseCommand::Change } => passphrase_change(&profile_dir(home)?),
        Command::Release { command: ReleaseCommand::Verify { manifest, signature, files, key } } => {
            release_verify(&manifest, &signature, &files, key.as_deref())
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "hush", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => {
            // As generate_to does: `help` has no page of its own.
            let command = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
            match dir {
                Some(dir) => clap_mangen::generate_to(command, &dir)
                    .with_context(|| format!("cannot write manual pages into {}", dir.display()))?,
                None => clap_mangen::Man::new(command).render(&mut std::io::stdout())?,
            }
            Ok(())
        }
        Command::Chat { to, lock_after } => {
            let lock_after = match lock_after.as_str() {
                "off" | "0" => None,
                text => Some(parse_duration(text)?),
            };
            chat(&profile_dir(home)?, to, lock_after)
        }
    }
}

fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(future)
}

fn profile_dir(home: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(home) = home {
        return Ok(home);
    }
    if let Some(home) = std::env::var_os("HUSH_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(data).join("hush"));
    }
    let user_home =
        std::env::var_os("HOME").context("cannot find a profile directory: set --home or HUSH_HOME")?;
    Ok(PathBuf::from(user_home).join(".local/share/hush"))
}

/// A secret from the environment (for scripts) or the terminal (never echoed).
fn secret(variable: &str, prompt: &str, confirm: bool, allow_empty: bool) -> Result<Zeroizing<String>> {
    if let Some(value) = std::env::var_os(variable) {
        let value = Zeroizing::new(value.into_string().map_err(|_| anyhow!("{variable} is not UTF-8"))?);
        if value.is_empty() && !allow_empty {
            bail!("{variable} is empty");
        }
        return Ok(value);
    }
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("{prompt}: "))
            .with_context(|| format!("cannot ask for the {prompt} (no terminal?); set {variable}"))?,
    );
    if first.is_empty() && !allow_empty {
        bail!("the {prompt} must not be empty");
    }
    if confirm && !first.is_empty() {
        let second = Zeroizing::new(rpassword::prompt_password(format!("Repeat {prompt}: "))?);
        if *first != *second {
            bail!("the two entries differ");
        }
    }
    Ok(first)
}

/// A secret argument (an invite, a wipe code) given on the command line,
/// else asked on the terminal (not echoed), else the first line of
/// standard input.
fn argument_or_stdin(given: Option<String>, what: &str) -> Result<Zeroizing<String>> {
    use std::io::{BufRead, IsTerminal};
    if let Some(given) = given {
        return Ok(Zeroizing::new(given));
    }
    let mut line = Zeroizing::new(String::new());
    if std::io::stdin().is_terminal() {
        *line = rpassword::prompt_password(format!("{what}: "))
            .with_context(|| format!("cannot ask for the {what}"))?;
    } else {
        std::io::stdin().lock().read_line(&mut line).with_context(|| format!("cannot read the {what}"))?;
    }
    let value = Zeroizing::new(line.trim().to_owned());
    if value.is_empty() {
        bail!("no {what} given (as an argument, at the prompt or on standard input)");
    }
    Ok(value)
}

/// Lines from standard input (or typed at the terminal, ended with
/// Ctrl-D), trimmed, empty ones skipped: names that should not go into the
/// shell's history.
fn lines_from_stdin(what: &str) -> Result<Vec<String>> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        eprintln!("{what}, one per line; end with Ctrl-D:");
    }
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_MESSAGE_BYTES)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the {what}"))?;
    let lines: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if lines.is_empty() {
        bail!("no {what} given (as arguments or on standard input)");
    }
    Ok(lines)
}

/// The largest message `hush send` reads from standard input.
const MAX_MESSAGE_BYTES: u64 = 64 * 1024;

/// A message from standard input: all of it, less one final line break.
fn message_from_stdin() -> Result<Zeroizing<String>> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        eprintln!("Type the message; end it with Ctrl-D on a line of its own.");
    }
    let mut bytes = Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(MAX_MESSAGE_BYTES + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the message")?;
    if bytes.len() as u64 > MAX_MESSAGE_BYTES {
        bail!("the message is longer than {} KiB", MAX_MESSAGE_BYTES / 1024);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| anyhow!("the message is not UTF-8 text"))?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text);
    if text.trim().is_empty() {
        bail!("the message is empty (give it as an argument or on standard input)");
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// Refuses a new passphrase below the strength floor.
fn check_strength(passphrase: &str, context: &[&str]) -> Result<()> {
    let floor = hush_client::strength::min_score_from_env()?;
    Ok(hush_client::strength::check(passphrase, floor, context)?)
}

fn passphrase(confirm: bool) -> Result<Zeroizing<String>> {
    secret("HUSH_PASSPHRASE", "passphrase", confirm, false)
}

/// What a machine that never had a profile says.
fn no_profile(dir: &Path) -> anyhow::Error {
    anyhow!("no profile in {} (run `hush join INVITE` first)", dir.display())
}

fn open(dir: &Path) -> Result<Client> {
    if !Client::exists(dir) {
        return Err(no_profile(dir));
    }
    let passphrase = passphrase(false)?;
    // A panic passphrase wipes the profile, and the library has told the
    // relay by the time this returns.
    match Client::open(dir, passphrase.as_bytes()) {
        Err(error) if error.is_profile_gone() => Err(no_profile(dir)),
        opened => Ok(opened?),
    }
}

fn chat(dir: &Path, open: Option<String>, lock_after: Option<Duration>) -> Result<()> {
    use std::io::IsTerminal;
    if !Client::exists(dir) {
        return Err(no_profile(dir));
    }
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        bail!("hush chat needs a terminal; scripts use `hush send` and `hush recv`");
    }
    let passphrase = match std::env::var_os("HUSH_PASSPHRASE") {
        Some(value) => {
            Some(Zeroizing::new(value.into_string().map_err(|_| anyhow!("HUSH_PASSPHRASE is not UTF-8"))?))
        }
        None => None,
    };
    let options = hush_tui::Options { dir: dir.to_path_buf(), open, lock_after, passphrase };
    match hush_tui::run(options)? {
        hush_tui::Outcome::Quit => Ok(()),
        hush_tui::Outcome::Wiped => Err(no_profile(dir)),
    }
}

/// Obeys a verified wipe order that arrived during `result`.
fn obey<T>(dir: &Path, client: Client, result: Result<T, ClientError>) -> Result<T> {
    match result {
        Err(ClientError::WipeOrdered) => {
            client.wipe()?;
            Err(no_profile(dir))
        }
        other => Ok(other?),
    }
}

/// Runs a client future to completion on a fresh runtime.
fn drive<T>(future: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| ClientError::Transport(error.to_string()))?;
    runtime.block_on(future)
}

/// Lines of `IDENTITY_KEY_HEX WIPE_HASH_HEX`.
fn read_provision_file(path: &Path) -> Result<Vec<(hush_proto::IdentityKey, [u8; 32])>> {
    use std::io::Read;
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    }
    let hex32 = |word: Option<&str>, line: usize| -> Result<[u8; 32]> {
        let bytes = word
            .and_then(|w| data_encoding::HEXLOWER_PERMISSIVE.decode(w.as_bytes()).ok())
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok());
        bytes.ok_or_else(|| {
            anyhow!("line {line}: expected IDENTITY_KEY_HEX WIPE_HASH_HEX (64 hex digits each)")
        })
    };
    let mut accounts = Vec::new();
    for (index, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let key = hex32(words.next(), index + 1)?;
        let wipe_hash = hex32(words.next(), index + 1)?;
        accounts.push((hush_proto::IdentityKey(key), wipe_hash));
    }
    Ok(accounts)
}

fn parse_duration(text: &str) -> Result<Duration> {
    humantime::parse_duration(text)
        .with_context(|| format!("'{text}' is not a duration (like 30s, 5m, 2h, 7d)"))
}

fn parse_secs(text: &str) -> Result<u32> {
    let secs = parse_duration(text)?.as_secs();
    if secs == 0 {
        bail!("'{text}' is too short: use at least one second");
    }
    u32::try_from(secs).map_err(|_| anyhow!("'{text}' is too long"))
}

fn serve(
    data: &Path,
    listen: &str,
    options: hush_relay::admin::ServeOptions<'_>,
    log_format: LogFormat,
) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUSH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    // The PostgreSQL client logs every statement's parameters (queue ids,
    // ciphertext, account ids) below info level: never, whatever HUSH_LOG
    // asks (a cap no directive overrides, however specific its target).
    let postgres_capped = tracing_subscriber::filter::filter_fn(|metadata| {
        let target = metadata.target();
        *metadata.level() <= tracing::Level::INFO
            || !(target.starts_with("tokio_postgres") || target.starts_with("postgres"))
    });
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    match log_format {
        LogFormat::Text => registry
            .with(
                log.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(postgres_capped)
                    .with_filter(filter),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                log.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_filter(postgres_capped)
                    .with_filter(filter),
            )
            .init(),
    }
    // Blocking threads well under the service unit's TasksMax (512).
    let runtime =
        tokio::runtime::Builder::new_multi_thread().max_blocking_threads(64).enable_all().build()?;
    runtime.block_on(async {
        let ready = |ready: hush_relay::admin::Ready| {
            use std::io::Write;
            println!("hush relay listening on {} pin {}", ready.address, ready.pin);
            let _ = std::io::stdout().flush();
        };
        hush_relay::admin::serve(data, listen, options, ready, shutdown_signal()).await
    })?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn admin(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Invite { data, count, uses, expires, address } => {
            if let Some(address) = address.as_deref().filter(|a| !hush_proto::is_relay_addresses(a.trim())) {
                bail!(
                    "'{}' is not an address clients can dial (HOST:PORT, or up to {} of them separated by commas)",
                    visible(address),
                    hush_proto::MAX_RELAY_ADDRESSES
                );
            }
            let invites = hush_relay::admin::create_invites(
                &data,
                count,
                uses,
                parse_duration(&expires)?,
                address.as_deref(),
            )?;
            for invite in invites {
                println!("{invite}");
            }
        }
        AdminCommand::Provision { file, data } => {
            let accounts = read_provision_file(&file)?;
            let added = hush_relay::admin::provision(&data, &accounts)?;
            println!("provisioned {added} of {} accounts", accounts.len());
        }
        AdminCommand::Deactivate { account, data } => {
            let account: AccountId = account.parse().context("not an account id")?;
            if !hush_relay::admin::deactivate(&data, &account)? {
                bail!("no such account");
            }
            println!("deactivated {account}");
        }
        AdminCommand::Reports { data, json, dismiss: Some(id) } => {
            if !hush_relay::admin::dismiss_report(&data, id)? {
                bail!("no report number {id}");
            }
            if json {
                println!("{}", json!({ "dismissed": id }));
            } else {
                println!("dismissed report {id}");
            }
        }
        AdminCommand::Reports { data, json, dismiss: None } => {
            for report in hush_relay::admin::reports(&data)? {
                let (text, sent_at) = match hush_core::Content::from_bytes(&report.content) {
                    Ok(content) => {
                        let text = match content.body {
                            hush_core::Body::Text(text) => text,
                            other => format!("{other:?}"),
                        };
                        (text, Some(crate::output::rfc3339(content.sent_at_ms)))
                    }
                    Err(_) => ("(unreadable content)".to_owned(), None),
                };
                let received = crate::output::rfc3339(report.received.saturating_mul(1000));
                if json {
                    let value = json!({
                        "number": report.id,
                        "account": report.account.to_string(),
                        "text": text,
                        "sent_at": sent_at,
                        "reason": report.reason,
                        "received_at": received,
                        "signature_valid": report.verified,
                        "more_reports": report.more,
                    });
                    println!("{}", json_line(&value));
                } else {
                    let check = if report.verified { "signature valid" } else { "SIGNATURE INVALID" };
                    println!(
                        "#{} {received} {} ({check}) wrote at {}: {}\n    reason: {}",
                        report.id,
                        report.account,
                        sent_at.as_deref().unwrap_or("?"),
                        visible(&text),
                        visible(&report.reason),
                    );
                    if report.more > 0 {
                        println!("    and {} more reports about this account, not kept", report.more);
                    }
                }
            }
        }
        AdminCommand::Stats { data, json } => {
            let stats = hush_relay::admin::stats(&data)?;
            if json {
                println!(
                    "{}",
                    json!({
                        "accounts": stats.accounts,
                        "active_accounts": stats.active_accounts,
                        "queued_messages": stats.queued_messages,
                        "queued_bytes": stats.queued_bytes,
                    })
                );
            } else {
                println!("accounts:        {}", stats.accounts);
                println!("active accounts: {}", stats.active_accounts);
                println!("queued messages: {}", stats.queued_messages);
                println!("queued bytes:    {}", stats.queued_bytes);
            }
        }
    }
    Ok(())
}

async fn join(
    dir: &Path,
    invite: &str,
    name: Option<String>,
    max_attempts: u32,
    policy: UpdatePolicy,
    json: bool,
) -> Result<()> {
    let invite: Invite = invite.parse()?;
    if Client::exists(dir) {
        bail!("a profile already exists in {} (use another --home)", dir.display());
    }
    let interactive = std::env::var_os("HUSH_PASSPHRASE").is_none();
    let name = name.unwrap_or_else(|| "me".to_owned());
    let passphrase = passphrase(true)?;
    check_strength(&passphrase, &[&name, &invite.address])?;
    let panic = if interactive || std::env::var_os("HUSH_PANIC_PASSPHRASE").is_some() {
        Some(secret("HUSH_PANIC_PASSPHRASE", "panic passphrase (empty for none)", true, true)?)
    } else {
        None
    };
    if panic.as_ref().is_some_and(|panic| **panic == *passphrase) {
        bail!("the panic passphrase must differ from the passphrase");
    }
    let client =
        Client::create(dir, passphrase.as_bytes(), KdfParams::default(), max_attempts, &invite, &name)?;
    let registered = async {
        client.set_update_policy(policy)?;
        if let Some(panic) = panic.as_ref().filter(|p| !p.is_empty()) {
            client.set_panic_passphrase(panic.as_bytes())?;
        }
        Session::register(&client, &invite.code).await?.close().await;
        Ok::<_, ClientError>(())
    }
    .await;
    if let Err(error) = registered {
        drop(client);
        let _ = Client::discard(dir);
        return Err(error.into());
    }
    let wipe_code = client.wipe_code()?;
    if json {
        let joined = json!({ "account": client.account().to_string(), "wipe_code": wipe_code.to_string() });
        println!("{}", json_line(&joined));
    } else {
        // stdout holds the account id alone, for scripts; the wipe code goes
        // to the terminal once.
        println!("{}", client.account());
        eprintln!("wipe code (keep it apart from this device; it is shown only now): {wipe_code}");
    }
    Ok(())
}

fn whoami(dir: &Path, json: bool) -> Result<()> {
    let client = open(dir)?;
    if json {
        let mut value = json!({ "account": client.account().to_string(), "name": client.name()? });
        // Made at the first login: whoever has it can start a conversation
        // without the relay learning who adds whom.
        if let Some(code) = client.contact_code()? {
            value["contact_code"] = json!(code.to_string());
        }
        println!("{}", json_line(&value));
    } else {
        println!("{} {}", client.account(), visible(&client.name()?));
    }
    Ok(())
}

fn contact(dir: &Path, command: ContactCommand) -> Result<()> {
    let client = open(dir)?;
    match command {
        ContactCommand::Add { name, account } => {
            let (name, account) = match (name, account) {
                (Some(name), Some(account)) => (name, account),
                (Some(name), None) => (name, lines_from_stdin("account id")?.remove(0)),
                (None, _) => {
                    let line = lines_from_stdin("contact name and account id")?.remove(0);
                    let (name, account) = line.rsplit_once(char::is_whitespace).unwrap_or(("", &line));
                    (name.trim().to_owned(), account.to_owned())
                }
            };
            if account.trim().starts_with("hush-contact:") {
                let code: hush_proto::ContactCode = account.parse().context("not a contact code")?;
                client.add_contact_code(&name, &code)?;
            } else {
                let account: AccountId = account.parse().context("not an account id or contact code")?;
                client.add_contact(&name, account)?;
            }
        }
        ContactCommand::List { json } => {
            for (name, account) in client.contacts()? {
                if json {
                    println!("{}", json_line(&json!({ "name": name, "account": account.to_string() })));
                } else {
                    println!("{} {account}", visible(&name));
                }
            }
        }
    }
    Ok(())
}

fn send(dir: &Path, to: &str, text: &str, expire: Option<u32>) -> Result<()> {
    let client = open(dir)?;
    let result = drive(async {
        let mut session = Session::login(&client).await?;
        session.send_text(to, text, expire).await?;
        session.close().await;
        Ok(())
    });
    obey(dir, client, result)
}

fn report(dir: &Path, id: &str, reason: &str) -> Result<()> {
    let client = open(dir)?;
    let result = drive(hush_client::report(&client, id, reason));
    let reported = obey(dir, client, result)?;
    println!("reported message {} from {} to the relay's operator", reported.id, reported.from);
    Ok(())
}

fn timer(dir: &Path, to: &str, secs: Option<u32>) -> Result<()> {
    let client = open(dir)?;
    let result = drive(async {
        let mut session = Session::login(&client).await?;
        session.set_timer(to, secs).await?;
        session.close().await;
        Ok(())
    });
    obey(dir, client, result)
}

fn recv(dir: &Path, wait: u64, json: bool) -> Result<()> {
    let client = open(dir)?;
    let result = drive(async {
        let mut session = Session::login(&client).await?;
        session.receive(Duration::from_secs(wait)).await?;
        session.close().await;
        Ok(())
    });
    if matches!(result, Err(ClientError::WipeOrdered)) {
        return obey(dir, client, result);
    }
    result?;
    for message in client.take_unshown()? {
        print_message(&message, json);
    }
    Ok(())
}

fn requests(dir: &Path, command: Option<RequestCommand>, json: bool) -> Result<()> {
    let client = open(dir)?;
    match command {
        None => {
            for request in client.requests()? {
                let from = request.from.to_string();
                if json {
                    let value = json!({
                        "id": request.id(),
                        "conversation": request.conversation,
                        "from": from,
                        "members": request.members,
                    });
                    println!("{}", json_line(&value));
                } else {
                    let name = visible(&request.conversation);
                    println!("{} {name}: from {from}, {} members", request.id(), request.members);
                }
            }
        }
        Some(RequestCommand::Accept { name }) => client.accept_request(&name)?,
        Some(RequestCommand::Decline { name }) => client.decline_request(&name)?,
    }
    Ok(())
}

fn history(dir: &Path, to: &str, json: bool) -> Result<()> {
    let client = open(dir)?;
    for message in client.history(to)? {
        print_message(&message, json);
    }
    Ok(())
}

fn group(dir: &Path, command: GroupCommand) -> Result<()> {
    let client = open(dir)?;
    let members = |names: &[String]| -> Result<Vec<AccountId>> {
        let names = if names.is_empty() { lines_from_stdin("members")? } else { names.to_vec() };
        names.iter().map(|name| Ok(client.resolve_member(name)?)).collect()
    };
    let result = match command {
        GroupCommand::List { json } => {
            for (name, _) in client.groups()? {
                if json {
                    println!("{}", json_line(&json!({ "name": name })));
                } else {
                    println!("{}", visible(&name));
                }
            }
            return Ok(());
        }
        GroupCommand::Members { name, json } => {
            for member in client.group_members(&name)? {
                let account = member.account.to_string();
                if json {
                    let value = json!({ "account": account, "name": member.name, "you": member.you });
                    println!("{}", json_line(&value));
                } else {
                    let name = member.name.as_deref().map(visible).unwrap_or_default();
                    let you = if member.you { " (you)" } else { "" };
                    println!("{account} {name}{you}");
                }
            }
            return Ok(());
        }
        GroupCommand::Create { name, members: names } => {
            let accounts = members(&names)?;
            drive(async {
                let mut session = Session::login(&client).await?;
                session.group_create(&name, &accounts).await?;
                session.close().await;
                Ok(())
            })
        }
        GroupCommand::Add { name, members: names } => {
            let accounts = members(&names)?;
            drive(async {
                let mut session = Session::login(&client).await?;
                session.group_add(&name, &accounts).await?;
                session.close().await;
                Ok(())
            })
        }
        GroupCommand::Remove { name, members: names } => {
            let accounts = members(&names)?;
            drive(async {
                let mut session = Session::login(&client).await?;
                session.group_remove(&name, &accounts).await?;
                session.close().await;
                Ok(())
            })
        }
    };
    obey(dir, client, result)
}

fn passphrase_change(dir: &Path) -> Result<()> {
    let client = open(dir)?;
    let new = secret("HUSH_NEW_PASSPHRASE", "new passphrase", true, false)?;
    let name = client.name()?;
    check_strength(&new, &[&name, client.relay().0])?;
    let (_, rekey) = client.change_passphrase(new.as_bytes())?;
    match rekey {
        hush_client::Rekey::Busy => eprintln!(
            "passphrase changed; the database key is replaced at the next unlock (another hush has the profile open)"
        ),
        hush_client::Rekey::Failed(reason) => {
            eprintln!("passphrase changed; the database key is replaced at the next unlock ({reason})")
        }
        _ => eprintln!("passphrase changed and the database key replaced"),
    }
    Ok(())
}

fn panic_set(dir: &Path) -> Result<()> {
    let client = open(dir)?;
    let panic = secret("HUSH_PANIC_PASSPHRASE", "panic passphrase", true, false)?;
    client.set_panic_passphrase(panic.as_bytes())?;
    Ok(())
}

fn remote_wipe(code: &str) -> Result<()> {
    let code: WipeCode = code.parse().context("not a wipe code (hush-wipe://...)")?;
    drive(send_wipe_order(&code, Duration::from_secs(20)))?;
    println!("wipe ordered: the device of {} wipes itself when it next connects", code.account);
    Ok(())
}

/// `hush release verify`: the signature, then every file; a failure says
/// what does not match.
fn release_verify(manifest: &Path, signature: &Path, files: &[PathBuf], key: Option<&Path>) -> Result<()> {
    use crate::release::{verify, PublicKey};
    let key = match key {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let key = PublicKey::parse(&text)?;
            eprintln!(
                "note: checking against key {} from {}, not the pinned Hush release key",
                key.id(),
                path.display()
            );
            key
        }
        None => PublicKey::release()?,
    };
    let verified = verify(&key, manifest, signature, files).context("release verification failed")?;
    let manifest = &verified.manifest;
    println!("signature ok: key {}, trusted comment \"{}\"", key.id(), visible(&verified.trusted_comment));
    println!("manifest: hush {} built from commit {}", visible(&manifest.version), visible(&manifest.commit));
    if let Some(toolchain) = &manifest.toolchain {
        println!("toolchain: {}", visible(toolchain));
    }
    for file in &verified.files {
        println!("ok {}", file.display());
    }
    Ok(())
}
