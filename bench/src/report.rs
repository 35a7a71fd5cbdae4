//! The summary table every benchmark prints, ready to paste into
//! `BENCHMARKS.md` (also included with `#[path]` by
//! `log-core/benches/throughput.rs`, which cannot depend on this crate).

/// One line of the final table.
pub struct Row {
    pub measurement: String,
    pub weir: String,
    pub baseline: String,
    /// weir's speed as a fraction of the baseline's (above 1: weir is faster).
    pub ratio: f64,
    pub goal: String,
}

pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "## Summary (ratio = weir speed / baseline speed; for times, baseline time / weir time)"
    );
    println!();
    println!("| measurement | weir | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {:.2} | {} |",
            row.measurement, row.weir, row.baseline, row.ratio, row.goal
        );
    }
}

/// The middle value (the upper one for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
