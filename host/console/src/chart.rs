//! Charts as server-drawn SVG: no script and nothing fetched. Colours come from the
//! stylesheet's classes (an inline style would break the Content-Security-Policy).

use maud::{Markup, html};

/// One bar: its label and its allowed, blocked and escalated counts.
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) counts: [u64; 3],
}

const WIDTH: u32 = 600;
const HEIGHT: u32 = 160;
const AXIS: u32 = 18;
const CLASSES: [&str; 3] = ["allow", "block", "escalate"];
const NAMES: [&str; 3] = ["allowed", "blocked", "escalated"];

/// Stacked bars of decisions by outcome, one per bucket, oldest on the left.
pub(crate) fn decisions(title: &str, bars: &[Bar]) -> Markup {
    let max = bars
        .iter()
        .map(|b| b.counts.iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = WIDTH / (bars.len().max(1) as u32);
    let plot = HEIGHT - AXIS;
    let total: [u64; 3] = [0, 1, 2].map(|i| bars.iter().map(|b| b.counts[i]).sum());
    let summary = format!(
        "{title}: {} allowed, {} blocked, {} escalated; the tallest bar is {max}",
        total[0], total[1], total[2]
    );
    html! {
        figure.chart {
            figcaption { (title) }
            svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(summary) {
                line.axis x1="0" y1=(plot) x2=(WIDTH) y2=(plot) {}
                @for (i, bar) in bars.iter().enumerate() {
                    @let x = i as u32 * slot + 1;
                    @let mut y = plot;
                    g {
                        title { (bar.label) ": " (bar.counts[0]) " allowed, " (bar.counts[1]) " blocked, " (bar.counts[2]) " escalated" }
                        @for k in 0..3 {
                            @let h = (bar.counts[k] * u64::from(plot) / max) as u32;
                            @if h > 0 {
                                @let top = { y -= h; y };
                                rect class=(CLASSES[k]) x=(x) y=(top) width=(slot.saturating_sub(2).max(1)) height=(h) {}
                            }
                        }
                    }
                    @if i % (bars.len() / 6).max(1) == 0 {
                        text.tick x=(x) y=(HEIGHT - 4) { (bar.label) }
                    }
                }
            }
            p.legend {
                @for k in 0..3 {
                    span class=(format!("key {}", CLASSES[k])) { (total[k]) " " (NAMES[k]) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_tallest_and_say_their_totals() {
        let bars = vec![
            Bar {
                label: "a".into(),
                counts: [2, 1, 1],
            },
            Bar {
                label: "b".into(),
                counts: [0, 0, 0],
            },
        ];
        let svg = decisions("Last hour", &bars).into_string();
        assert!(svg.contains("2 allowed, 1 blocked, 1 escalated"), "{svg}");
        // The tallest bar fills the plot: 2 of 4 is half of 142.
        assert!(svg.contains(r#"height="71""#), "{svg}");
    }
}
