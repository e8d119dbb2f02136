//! `splitmx report --html FILE`: the report as one self-contained page (inline CSS and an
//! inline SVG bar chart; no script, no external resource), to attach to a ticket or put
//! on an intranet page.

use std::fmt::Write;

use super::report::Report;

/// Rows of the old-side list shown on the page (the JSON output has them all).
const MAX_ROWS: usize = 5000;

/// Escape text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page.
pub(super) fn page(report: &Report) -> String {
    let title = format!(
        "splitmx migration report, {} to {}",
        report.period.first, report.period.last
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
         body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}\n\
         table {{ border-collapse: collapse; margin: 1em 0; }}\n\
         th, td {{ padding: .25em .75em; border-bottom: 1px solid #ddd; text-align: left; }}\n\
         td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}\n\
         .old {{ fill: #d9822b; }} .new {{ fill: #2b6cb0; }} .pale {{ opacity: .55; }}\n\
         </style>\n</head>\n<body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let _ = writeln!(
        out,
        "<p>{} recipients, {} messages over {} days (journal {}).</p>",
        report.recipients,
        report.messages,
        report.days,
        esc(&report.journal.display().to_string())
    );
    chart(&mut out, report);
    routes_table(&mut out, report);
    if let Some(old) = &report.old {
        let _ = writeln!(
            out,
            "<h2>Still on the old side ({}): {} recipients ({:.1}%), {} messages</h2>",
            esc(&old.routes.join(", ")),
            old.recipients,
            old.recipients_percent,
            old.messages
        );
        out.push_str("<table>\n<tr><th>recipient</th><th>route</th><th>messages</th><th>last seen (UTC)</th></tr>\n");
        for o in old.list.iter().take(MAX_ROWS) {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                esc(&o.recipient),
                esc(&o.route),
                o.messages,
                esc(&o.last_seen)
            );
        }
        out.push_str("</table>\n");
        if old.list.len() > MAX_ROWS {
            let _ = writeln!(
                out,
                "<p>{} more not shown; <code>splitmx report --json</code> lists them all.</p>",
                old.list.len() - MAX_ROWS
            );
        }
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Two bars per route: share of recipients (solid) and of messages (pale).
fn chart(out: &mut String, report: &Report) {
    const LABEL: usize = 160;
    const BAR: f64 = 400.0;
    const ROW: usize = 44;
    let height = report.routes.len() * ROW + 30;
    let width = LABEL + BAR as usize + 80;
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"share of recipients and messages per route\">"
    );
    let old_routes: Vec<&str> = report
        .old
        .as_ref()
        .map(|o| o.routes.iter().map(String::as_str).collect())
        .unwrap_or_default();
    for (i, r) in report.routes.iter().enumerate() {
        let y = i * ROW + 6;
        let class = if old_routes.contains(&r.route.as_str()) {
            "old"
        } else {
            "new"
        };
        let _ = writeln!(
            out,
            "<text x=\"0\" y=\"{}\" font-size=\"13\">{}</text>",
            y + 22,
            esc(&r.route)
        );
        for (j, (pct, what)) in [
            (r.recipients_percent, "recipients"),
            (r.messages_percent, "messages"),
        ]
        .into_iter()
        .enumerate()
        {
            let by = y + j * 18;
            let w = (pct / 100.0 * BAR).clamp(0.0, BAR);
            let pale = if j == 1 { " pale" } else { "" };
            let _ = writeln!(
                out,
                "<rect class=\"{class}{pale}\" x=\"{LABEL}\" y=\"{by}\" width=\"{w:.1}\" height=\"15\"><title>{}: {pct:.1}% of {what}</title></rect>",
                esc(&r.route)
            );
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{pct:.1}% {what}</text>",
                LABEL as f64 + w + 4.0,
                by + 12
            );
        }
    }
    out.push_str("</svg>\n");
}

fn routes_table(out: &mut String, report: &Report) {
    out.push_str("<table>\n<tr><th>route</th><th>kind</th><th>recipients</th><th>%</th><th>messages</th><th>%</th></tr>\n");
    for r in &report.routes {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td><td class=\"n\">{}</td><td class=\"n\">{:.1}</td></tr>",
            esc(&r.route),
            esc(&r.kind),
            r.recipients,
            r.recipients_percent,
            r.messages,
            r.messages_percent
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
