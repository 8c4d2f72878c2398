//! `seedq-producer top`: the cluster at a glance, refreshed in place: jobs with progress, rate
//! and ETA, nodes with their GPUs and busy/idle slots, and the namespace's queue depths.
//!
//! On a terminal it draws on the alternate screen in raw mode and exits on `q`, Esc or Ctrl-C
//! (raw mode turns Ctrl-C into a key, so the terminal is always restored on the way out). When
//! stdout is not a terminal (a pipe, a log file, cron) it prints each snapshot as plain lines,
//! separated by a blank line, with no escape codes; `--iterations N` stops after N snapshots.

use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use clap::Args;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, queue, terminal};
use futures_util::StreamExt;
use seedq_broker::Broker;
use seedq_protocol::Topology;
use seedq_store::Store;

use crate::context::Env;
use crate::progress::view;

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after this many snapshots (default: until q or Ctrl-C).
    #[arg(long)]
    pub iterations: Option<u64>,
}

pub async fn run(env: &Env, args: TopArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.interval.is_finite() && args.interval >= 0.1,
        "--interval {}: give at least 0.1 seconds",
        args.interval
    );
    let store = env.store().await?;
    // Queue depths are a bonus: a broker that cannot be reached leaves them out, not the view.
    let broker = env.broker_now().await.ok();
    let interval = Duration::from_secs_f64(args.interval);
    if std::io::stdout().is_terminal() {
        let mut screen = Screen::enter()?;
        let mut keys = EventStream::new();
        let mut shown = 0u64;
        loop {
            let lines = snapshot(env, &store, broker.as_ref()).await?;
            screen.draw(&lines)?;
            shown += 1;
            if args.iterations.is_some_and(|n| shown >= n) {
                return Ok(0);
            }
            let sleep = tokio::time::sleep(interval);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    event = keys.next() => match event {
                        Some(Ok(Event::Key(key))) if is_quit(&key) => return Ok(0),
                        Some(Ok(Event::Resize(..))) => break,
                        Some(Ok(_)) => {}
                        // The terminal went away: nothing left to draw on.
                        Some(Err(_)) | None => return Ok(0),
                    },
                }
            }
        }
    }
    let mut shown = 0u64;
    loop {
        let lines = snapshot(env, &store, broker.as_ref()).await?;
        let mut out = std::io::stdout().lock();
        for line in &lines {
            writeln!(out, "{line}")?;
        }
        writeln!(out)?;
        out.flush()?;
        drop(out);
        shown += 1;
        if args.iterations.is_some_and(|n| shown >= n) {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

fn is_quit(key: &KeyEvent) -> bool {
    matches!(
        key.code,
        KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc
    ) || (key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL))
}

/// The alternate screen in raw mode, restored when dropped (on every way out, errors included).
struct Screen {
    out: std::io::Stdout,
}

impl Screen {
    fn enter() -> anyhow::Result<Screen> {
        let mut out = std::io::stdout();
        terminal::enable_raw_mode()?;
        execute!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(Screen { out })
    }

    fn draw(&mut self, lines: &[String]) -> anyhow::Result<()> {
        let (width, height) = terminal::size().unwrap_or((120, 40));
        queue!(
            self.out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )?;
        for (row, line) in lines.iter().take(height as usize).enumerate() {
            let clipped: String = line.chars().take(width as usize).collect();
            queue!(self.out, cursor::MoveTo(0, row as u16))?;
            write!(self.out, "{clipped}")?;
        }
        self.out.flush()?;
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(self.out, cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// One frame: header, jobs, nodes, queues.
async fn snapshot(
    env: &Env,
    store: &Store,
    broker: Option<&Broker>,
) -> anyhow::Result<Vec<String>> {
    let now = seedq_protocol::now_ms();
    let mut lines = vec![format!(
        "seedq top: namespace {}   (q or Ctrl-C quits)",
        env.namespace
    )];
    lines.push(String::new());
    lines.push("JOBS".into());
    let mut any = false;
    for id in store.list_jobs().await? {
        if let Some(p) = store.progress(&id).await? {
            let job = store.load_job(&id).await?;
            lines.push(format!("  {}", view(&p, job.as_ref(), now).to_line()));
            any = true;
        }
    }
    if !any {
        lines.push("  (no jobs)".into());
    }
    lines.push(String::new());
    lines.push(format!(
        "NODES  {:<16} {:<8} {:<28} {:>10}  SLOTS",
        "", "BACKEND", "GPUS", "BUSY/ALL"
    ));
    let nodes = store.list_nodes().await?;
    if nodes.is_empty() {
        lines.push("  (no live nodes)".into());
    }
    for hb in &nodes {
        let slots = hb
            .slots
            .iter()
            .map(|s| match (&s.quarantined, &s.busy_with) {
                (Some(q), _) => format!("{}:quarantined({})", s.slot, q.reason),
                (None, Some(work)) => format!("{}:busy({work})", s.slot),
                (None, None) => format!("{}:idle", s.slot),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let gpus = if hb.gpus.is_empty() {
            "-".to_string()
        } else {
            hb.gpus.join(", ")
        };
        lines.push(format!(
            "  {:<20} {:<8} {:<28} {:>10}  {slots}  scripts {}/{}",
            hb.node,
            hb.backend,
            gpus,
            format!("{}/{}", hb.busy_slots, hb.slots.len()),
            hb.scripts_running,
            hb.script_limit
        ));
    }
    lines.push(String::new());
    lines.push("QUEUES".into());
    match broker {
        None => lines.push("  (RabbitMQ unreachable: depths unknown)".into()),
        Some(broker) => {
            let t = Topology::new(env.namespace.clone());
            for queue in [t.seeds_queue(), t.scripts_queue(), t.retry_queue(), t.dlq()] {
                match broker.queue_depth(&queue).await {
                    Ok(d) => lines.push(format!(
                        "  {queue:<40} {:>10} ready {:>4} consumers",
                        d.messages, d.consumers
                    )),
                    Err(_) => lines.push(format!("  {queue:<40} (not declared)")),
                }
            }
        }
    }
    Ok(lines)
}
