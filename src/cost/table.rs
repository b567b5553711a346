//! How an estimate reads: an aligned plain-text table for a terminal, and a one-line summary for a status
//! field. Rounding happens here and only here.

use super::estimate::{Estimate, Line};

const HEADERS: [&str; 6] = ["Component", "Resource", "Quantity", "Unit", "Price", "USD"];
/// Columns aligned to the right (numbers).
const RIGHT: [bool; 6] = [false, false, true, false, true, true];

impl Estimate {
    /// The total as a status field shows it, for example `$12.34 per million writes`.
    pub fn summary(&self) -> String {
        format!("${} per million writes", usd(self.total()))
    }

    /// Every line, a total row and the notes, as an aligned plain-text table:
    ///
    /// ```text
    /// Cost per million writes to EventLog default/game-events (fan-out Sns)
    ///
    /// Component          Resource       Quantity  Unit      Price     USD
    /// -----------------  ------------  ---------  --------  -------  ----
    /// SQS send requests  ingest queue  1,000,000  requests  $0.40/M  0.40
    /// ...
    /// ```
    ///
    /// Quantities, prices and dollars are per million log writes; lines under a cent show four decimals.
    pub fn render_table(&self) -> String {
        let mut rows: Vec<[String; 6]> = self.lines.iter().map(row).collect();
        let total: [String; 6] = [
            "Total".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            usd(self.total()),
        ];
        let mut widths = HEADERS.map(|h| h.chars().count());
        for r in rows.iter().chain(std::iter::once(&total)) {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let rule: [String; 6] = widths.map(|w| "-".repeat(w));

        let mut out = format!(
            "Cost per million writes to EventLog {} (fan-out {})\n\n",
            self.event_log,
            self.fan_out.as_str()
        );
        out.push_str(&format_row(&HEADERS.map(String::from), &widths));
        out.push_str(&format_row(&rule, &widths));
        for r in rows.drain(..) {
            out.push_str(&format_row(&r, &widths));
        }
        out.push_str(&format_row(&rule, &widths));
        out.push_str(&format_row(&total, &widths));
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

fn row(l: &Line) -> [String; 6] {
    let basis = if l.unit.price_basis() == 1.0 {
        l.unit.label().to_string()
    } else {
        "M".to_string()
    };
    [
        l.component.name().to_string(),
        l.resource.clone(),
        quantity(l.quantity),
        l.unit.label().to_string(),
        if l.unit_price == 0.0 {
            "free".to_string()
        } else {
            format!("${}/{basis}", price(l.unit_price))
        },
        usd(l.usd),
    ]
}

fn format_row(cells: &[String; 6], widths: &[usize; 6]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let pad = widths[i].saturating_sub(cell.chars().count());
        if RIGHT[i] {
            line.push_str(&" ".repeat(pad));
            line.push_str(cell);
        } else {
            line.push_str(cell);
            line.push_str(&" ".repeat(pad));
        }
    }
    line.truncate(line.trim_end().len());
    line.push('\n');
    line
}

/// Dollars: two decimals, four for a non-zero amount under a cent; halves round away from zero.
fn usd(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.01 {
        format!("{:.4}", round_to(x, 4))
    } else {
        // `+ 0.0` turns a negative zero into zero.
        format!("{:.2}", round_to(x, 2) + 0.0)
    }
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// A unit price: as many decimals as it has (up to ten), at least two.
fn price(x: f64) -> String {
    let s = format!("{x:.10}");
    let s = s.trim_end_matches('0');
    match s.split_once('.') {
        Some((_, decimals)) if decimals.len() < 2 => format!("{s}{}", "0".repeat(2 - decimals.len())),
        _ => s.to_string(),
    }
}

/// A quantity with thousands separators and up to two decimals.
fn quantity(x: f64) -> String {
    let s = format!("{:.2}", x.abs());
    let (int, frac) = s.split_once('.').unwrap_or((s.as_str(), ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let frac = frac.trim_end_matches('0');
    let sign = if x < 0.0 && s != "0.00" { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(quantity(1_200_000.0), "1,200,000");
        assert_eq!(quantity(47_500.0), "47,500");
        assert_eq!(quantity(0.5), "0.5");
        assert_eq!(quantity(9_803.921_568), "9,803.92");
        assert_eq!(quantity(100.0), "100");
        assert_eq!(price(0.4), "0.40");
        assert_eq!(price(0.625), "0.625");
        assert_eq!(price(0.000_016_666_7), "0.0000166667");
        assert_eq!(price(0.0), "0.00");
        assert_eq!(usd(60.734), "60.73");
        assert_eq!(usd(3.125), "3.13", "half a cent rounds up");
        assert_eq!(usd(0.001_96), "0.0020");
        assert_eq!(usd(0.0), "0.00");
    }
}
