//! The human output: a tree with state columns (as `kubectl tree` and
//! `crossplane beta trace` print theirs), and the diagnosis of `why`.
//! Styles are always written; the output stream drops them when it is not
//! a terminal.

use anstyle::{AnsiColor, Style};
use k8s_openapi::jiff::Timestamp;
use ossature_model::tree::{Key, NOT_REPORTED, Node};

use crate::why::{Diagnosis, EventView};

const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default().bold();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();

/// One cell of a table: its text and style.
struct Cell {
    text: String,
    style: Style,
}

fn cell(text: impl Into<String>, style: Style) -> Cell {
    Cell {
        text: text.into(),
        style,
    }
}

/// Rows in columns two spaces apart; the last column is not padded.
fn table(rows: Vec<Vec<Cell>>) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.text.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (c, cell) in row.into_iter().enumerate() {
            let pad = if c == last {
                0
            } else {
                widths[c] + 2 - cell.text.chars().count()
            };
            if !cell.text.is_empty() {
                let (on, off) = (cell.style.render(), cell.style.render_reset());
                line.push_str(&format!("{on}{}{off}", cell.text));
            }
            line.push_str(&" ".repeat(pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `Kind/name`, as kubectl names objects.
fn object_name(key: &Key) -> String {
    format!("{:?}/{}", key.kind, key.name)
}

/// `True`, `False`, or `Unknown` while its owner has not reported it.
fn ready_cell(node_ready: bool, reason: &str) -> Cell {
    match (node_ready, reason == NOT_REPORTED) {
        (true, _) => cell("True", GREEN),
        (false, true) => cell("Unknown", YELLOW),
        (false, false) => cell("False", RED),
    }
}

/// The tree of a tenant: NAME (indented), BACKEND, READY, STATUS (the
/// reason; with the message when not Ready; a certificate's expiry).
pub fn tree(root: &Node, now: Timestamp) -> String {
    let mut rows = vec![vec![
        cell("NAME", BOLD),
        cell("BACKEND", BOLD),
        cell("READY", BOLD),
        cell("STATUS", BOLD),
    ]];
    walk(root, "", None, now, &mut rows);
    table(rows)
}

/// One node and those below it; `last` says whether it is its parent's
/// last child (None for the root).
fn walk(node: &Node, indent: &str, last: Option<bool>, now: Timestamp, rows: &mut Vec<Vec<Cell>>) {
    let branch = match last {
        None => "",
        Some(false) => "├─ ",
        Some(true) => "└─ ",
    };
    let state = &node.state;
    let mut status = state.reason.clone();
    if !state.ready && !state.message.is_empty() {
        status = format!("{status}: {}", state.message);
    }
    if let Some(expires) = &node.expires {
        status = format!("{status} (expires {})", expiry(expires, now));
    }
    rows.push(vec![
        cell(
            format!("{indent}{branch}{}", object_name(&node.key)),
            Style::new(),
        ),
        cell(format!("{:?}", node.key.backend), DIM),
        ready_cell(state.ready, &state.reason),
        cell(status, if state.ready { Style::new() } else { RED }),
    ]);
    let below = match last {
        None => String::new(),
        Some(false) => format!("{indent}│  "),
        Some(true) => format!("{indent}   "),
    };
    let count = node.children.len();
    for (i, child) in node.children.iter().enumerate() {
        walk(child, &below, Some(i + 1 == count), now, rows);
    }
}

/// A certificate's expiry with how far away it is.
fn expiry(expires: &str, now: Timestamp) -> String {
    match expires.parse::<Timestamp>() {
        Ok(at) if at >= now => format!("{expires}, in {}", span(at.duration_since(now))),
        Ok(at) => format!("{expires}, {} ago", span(now.duration_since(at))),
        Err(_) => expires.to_string(),
    }
}

/// A duration as kubectl prints ages: its largest unit, `45s`, `12m`,
/// `5h`, `89d`.
fn span(duration: k8s_openapi::jiff::SignedDuration) -> String {
    let seconds = duration.as_secs().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// What `why` prints: the tenant's Ready, the blocking object with its
/// condition, reason and message, the branch down to it, and the Events.
pub fn diagnosis(diagnosis: &Diagnosis, now: Timestamp) -> String {
    let ready = if diagnosis.ready {
        cell("Ready", GREEN)
    } else {
        cell("not Ready", RED)
    };
    let mut out = format!(
        "{}Tenant {}{} is {}{}{}",
        BOLD.render(),
        diagnosis.tenant,
        BOLD.render_reset(),
        ready.style.render(),
        ready.text,
        ready.style.render_reset()
    );
    match diagnosis.message.as_str() {
        "" => out.push_str(&format!(" ({})\n", diagnosis.reason)),
        message => out.push_str(&format!(" ({}): {message}\n", diagnosis.reason)),
    }
    match &diagnosis.blocking {
        None => out.push_str("Nothing down its tree is blocked: every object is Ready.\n"),
        Some(blocking) => {
            let state = &blocking.state;
            let verdict = if state.reason == NOT_REPORTED {
                "Unknown"
            } else {
                "False"
            };
            let mut rows = vec![
                vec![
                    cell("Blocking", BOLD),
                    cell(
                        format!("{:?} {}", blocking.key.backend, object_name(&blocking.key)),
                        RED,
                    ),
                ],
                vec![
                    cell("Condition", BOLD),
                    cell(
                        format!(
                            "{}={verdict} on {}",
                            state.condition,
                            object_name(&blocking.reported_by)
                        ),
                        Style::new(),
                    ),
                ],
                vec![cell("Reason", BOLD), cell(state.reason.clone(), RED)],
            ];
            if !state.message.is_empty() {
                rows.push(vec![
                    cell("Message", BOLD),
                    cell(state.message.clone(), Style::new()),
                ]);
            }
            if let Some(expires) = &blocking.expires {
                rows.push(vec![
                    cell("Expires", BOLD),
                    cell(expiry(expires, now), Style::new()),
                ]);
            }
            let branch: Vec<String> = blocking.branch.iter().map(object_name).collect();
            rows.push(vec![cell("Branch", BOLD), cell(branch.join(" > "), DIM)]);
            out.push_str(&table(rows));
        }
    }
    if diagnosis.blocking.is_none() {
        return out;
    }
    if let Some(error) = &diagnosis.events_error {
        out.push_str(&format!("\nEvents could not be read: {error}\n"));
    } else if diagnosis.events.is_empty() {
        out.push_str("\nNo Events about it (the apiserver keeps them for an hour by default).\n");
    } else {
        out.push_str("\nEvents, oldest first:\n");
        out.push_str(&events(&diagnosis.events, now));
    }
    out
}

fn events(events: &[EventView], now: Timestamp) -> String {
    let mut rows = vec![vec![
        cell("LAST SEEN", BOLD),
        cell("TYPE", BOLD),
        cell("REASON", BOLD),
        cell("OBJECT", BOLD),
        cell("COUNT", BOLD),
        cell("MESSAGE", BOLD),
    ]];
    for event in events {
        let age = event
            .at
            .map(|at| span(now.duration_since(at)))
            .unwrap_or_else(|| "?".into());
        let style = if event.type_ == "Warning" {
            YELLOW
        } else {
            Style::new()
        };
        rows.push(vec![
            cell(age, Style::new()),
            cell(event.type_.clone(), style),
            cell(event.reason.clone(), style),
            cell(event.object.clone(), Style::new()),
            cell(event.count.to_string(), Style::new()),
            cell(event.message.clone(), Style::new()),
        ]);
    }
    table(rows)
}

#[cfg(test)]
mod tests;
