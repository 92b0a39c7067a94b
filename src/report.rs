//! The per-run report of the offline retraining job: a Markdown summary and, per evaluation set,
//! ROC, precision-recall and reliability plots as SVG.
//!
//! Evaluation and rendering are pure (they build strings); only [`write_report`] touches the
//! file system. The plots use plotters' SVG backend without a font engine (no `ttf`, no
//! `ab_glyph`): text goes out as SVG `<text>` elements that the viewer lays out with its own
//! fonts, and plotters only estimates text extents for its layout, so no font file is needed
//! to build or to run.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::model::metrics::{self, Report};

/// Equal-width bins of the reliability diagram, the same count the ECE column uses.
const BINS: usize = 10;
/// Languages with fewer examples than this are flagged in the per-language table.
const MIN_LANGUAGE_EXAMPLES: usize = 10;
const PLOT_SIZE: (u32, u32) = (720, 540);
/// matplotlib's tab10 palette: distinguishable, and readable on white.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Scores of one model on one evaluation set.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub name: &'a str,
    /// Probabilities, parallel to the section's labels. Non-finite scores are left out of every
    /// figure and counted in the summary.
    pub scores: &'a [f64],
}

/// One evaluation set (e.g. "corpus held-out families", "newest events") with its labels and
/// the models compared on it.
#[derive(Debug, Clone)]
pub struct Section<'a> {
    pub title: &'a str,
    /// `true` for insecure.
    pub labels: &'a [bool],
    pub series: Vec<Series<'a>>,
    /// Per-language breakdown: language -> indices into labels/scores (out-of-range indices
    /// are ignored).
    pub languages: Vec<(String, Vec<usize>)>,
}

/// Everything one report shows.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    /// The candidate model version.
    pub version: &'a str,
    /// RFC 3339 time.
    pub created: &'a str,
    /// E.g. "published", "refused: ROC-AUC fell by 0.03 on newest events (tolerance 0.01)".
    pub decision: &'a str,
    /// Free key/value lines: "corpus snippets" -> "2927", hyperparameters, ...
    pub training: Vec<(String, String)>,
    pub sections: Vec<Section<'a>>,
    /// Block threshold for the precision/recall columns.
    pub threshold: f64,
}

/// Writes `dir/summary.md` and, per section, `dir/roc-<slug>.svg`, `dir/pr-<slug>.svg` and
/// `dir/reliability-<slug>.svg`, where the slug is the section title in lowercase ASCII
/// letters, digits and '-' (made unique, `section-<i>` for a title with none). Creates `dir`.
/// Each file is written beside its final name and renamed into place; the plots come first and
/// `summary.md` last, so its links resolve once it exists. Returns the paths in that order.
///
/// # Errors
/// Creating `dir`, writing or renaming a file (the error names the path), or rendering a plot.
pub fn write_report(dir: &Path, input: &ReportInput<'_>) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let slugs = section_slugs(&input.sections);
    let evals: Vec<_> = input.sections.iter().map(|s| evaluate_section(s, input.threshold)).collect();
    let mut written = Vec::new();
    for ((section, eval), slug) in input.sections.iter().zip(&evals).zip(&slugs) {
        for (kind, svg) in [
            ("roc", roc_svg(section.title, eval)?),
            ("pr", pr_svg(section.title, section.labels, eval)?),
            ("reliability", reliability_svg(section.title, eval)?),
        ] {
            let path = dir.join(format!("{kind}-{slug}.svg"));
            write_atomic(&path, &svg)?;
            written.push(path);
        }
    }
    let path = dir.join("summary.md");
    write_atomic(&path, &summary(input, &evals, &slugs))?;
    written.push(path);
    Ok(written)
}

/// A progress bar of `len` steps labelled `what`, drawing to stderr, hidden when stderr is not
/// a terminal (logs and CI stay free of control sequences).
#[must_use]
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.with_message(what.to_owned())
}

/// The evaluable examples of one series: finite scores with their labels.
struct Scored {
    scores: Vec<f64>,
    labels: Vec<bool>,
    /// Non-finite scores left out.
    skipped: usize,
}

impl Scored {
    fn new(scores: &[f64], labels: &[bool], indices: impl IntoIterator<Item = usize>) -> Self {
        let n = scores.len().min(labels.len());
        let mut out = Self { scores: Vec::new(), labels: Vec::new(), skipped: 0 };
        for i in indices.into_iter().filter(|i| *i < n) {
            if scores[i].is_finite() {
                out.scores.push(scores[i]);
                out.labels.push(labels[i]);
            } else {
                out.skipped += 1;
            }
        }
        out
    }

    fn single_class(&self) -> bool {
        self.labels.iter().all(|l| *l) || self.labels.iter().all(|l| !*l)
    }
}

struct SeriesEval<'a> {
    name: &'a str,
    data: Scored,
    report: Report,
    /// (scores, labels) given, when the two lengths differ.
    mismatched_len: Option<(usize, usize)>,
}

fn evaluate_section<'a>(section: &Section<'a>, threshold: f64) -> Vec<SeriesEval<'a>> {
    let labels = section.labels;
    section
        .series
        .iter()
        .map(|s| {
            let data = Scored::new(s.scores, labels, 0..s.scores.len());
            let report = metrics::evaluate(&data.scores, &data.labels, threshold);
            let mismatched_len = (s.scores.len() != labels.len()).then_some((s.scores.len(), labels.len()));
            SeriesEval { name: s.name, data, report, mismatched_len }
        })
        .collect()
}

/// Four decimals; undefined figures (NaN) as "n/a".
fn num(x: f64) -> String {
    if x.is_finite() { format!("{x:.4}") } else { "n/a".to_owned() }
}

/// Text safe inside a Markdown table cell or on one line (`\|` renders as `|` elsewhere too).
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn summary(input: &ReportInput<'_>, evals: &[Vec<SeriesEval<'_>>], slugs: &[String]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Retraining report: {}\n", cell(input.version));
    let _ = writeln!(md, "- Created: {}", cell(input.created));
    let _ = writeln!(md, "- Decision: {}", cell(input.decision));
    let _ = writeln!(md, "- Block threshold: {}\n", num(input.threshold));
    md.push_str("## Training\n\n");
    if input.training.is_empty() {
        md.push_str("No training facts recorded.\n");
    } else {
        md.push_str("| Fact | Value |\n| --- | --- |\n");
        for (k, v) in &input.training {
            let _ = writeln!(md, "| {} | {} |", cell(k), cell(v));
        }
    }
    for ((section, evals), slug) in input.sections.iter().zip(evals).zip(slugs) {
        section_summary(&mut md, section, evals, slug, input.threshold);
    }
    md
}

fn section_summary(md: &mut String, section: &Section<'_>, evals: &[SeriesEval<'_>], slug: &str, threshold: f64) {
    let positives = section.labels.iter().filter(|l| **l).count();
    let _ = writeln!(md, "\n## {}\n", cell(section.title));
    let _ = writeln!(md, "{} examples, {} insecure.\n", section.labels.len(), positives);
    if evals.is_empty() {
        md.push_str("No model was scored on this set.\n");
    } else {
        let t = num(threshold);
        let _ = writeln!(
            md,
            "| Model | n | Positives | ROC-AUC | PR-AUC | Log loss | Brier | ECE | Precision @ {t} | Recall @ {t} |"
        );
        md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for e in evals {
            let r = &e.report;
            let figures = [r.roc_auc, r.pr_auc, r.log_loss, r.brier, r.calibration_error, r.precision, r.recall];
            // evaluate() zeroes the figures of an empty input; none of them is measured.
            let figures: Vec<String> =
                figures.iter().map(|x| if r.n == 0 { "n/a".to_owned() } else { num(*x) }).collect();
            let _ = writeln!(md, "| {} | {} | {} | {} |", cell(e.name), r.n, r.positives, figures.join(" | "));
        }
    }
    let notes = series_notes(evals);
    if !notes.is_empty() {
        md.push('\n');
        for note in notes {
            let _ = writeln!(md, "- {note}");
        }
    }
    language_table(md, section);
    let alt = cell(section.title).replace(['[', ']'], "");
    let _ = writeln!(md, "\n![ROC curves: {alt}](roc-{slug}.svg)\n");
    let _ = writeln!(md, "![Precision-recall curves: {alt}](pr-{slug}.svg)\n");
    let _ = writeln!(md, "![Reliability diagram: {alt}](reliability-{slug}.svg)");
}

fn series_notes(evals: &[SeriesEval<'_>]) -> Vec<String> {
    let mut notes = Vec::new();
    for e in evals {
        let name = cell(e.name);
        if let Some((scores, labels)) = e.mismatched_len {
            notes.push(format!(
                "`{name}`: {scores} scores for {labels} labels; only the first {} pairs are compared.",
                scores.min(labels)
            ));
        }
        if e.data.skipped > 0 {
            notes.push(format!("`{name}`: non-finite scores left out: {}.", e.data.skipped));
        }
        if e.data.labels.is_empty() {
            notes.push(format!("`{name}`: no examples to evaluate; no curves drawn."));
        } else if e.data.single_class() {
            notes.push(format!(
                "`{name}`: the labels hold one class only; ROC-AUC and PR-AUC are undefined and the ROC and PR curves are skipped."
            ));
        }
    }
    notes
}

fn language_table(md: &mut String, section: &Section<'_>) {
    if section.languages.is_empty() {
        return;
    }
    md.push_str("\n### By language\n\n| Language | n | Positives |");
    for s in &section.series {
        let _ = write!(md, " {0} ROC-AUC | {0} log loss |", cell(s.name));
    }
    md.push_str(" Note |\n| --- | ---: | ---: |");
    md.push_str(&" ---: | ---: |".repeat(section.series.len()));
    md.push_str(" --- |\n");
    for (language, indices) in &section.languages {
        let labels: Vec<bool> = indices.iter().filter_map(|i| section.labels.get(*i).copied()).collect();
        let positives = labels.iter().filter(|l| **l).count();
        let _ = write!(md, "| {} | {} | {} |", cell(language), labels.len(), positives);
        for s in &section.series {
            let data = Scored::new(s.scores, section.labels, indices.iter().copied());
            let (auc, loss) = if data.labels.is_empty() {
                (f64::NAN, f64::NAN)
            } else {
                (metrics::roc_auc(&data.scores, &data.labels), metrics::log_loss(&data.scores, &data.labels))
            };
            let _ = write!(md, " {} | {} |", num(auc), num(loss));
        }
        let mut flags = Vec::new();
        if labels.len() < MIN_LANGUAGE_EXAMPLES {
            flags.push(format!("fewer than {MIN_LANGUAGE_EXAMPLES} examples"));
        }
        if positives == 0 || positives == labels.len() {
            flags.push("single class".to_owned());
        }
        let _ = writeln!(md, " {} |", flags.join("; "));
    }
}

/// One slug per section: unique, never empty.
fn section_slugs(sections: &[Section<'_>]) -> Vec<String> {
    let mut seen = HashSet::new();
    sections
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut base = slug(s.title);
            if base.is_empty() {
                base = format!("section-{}", i + 1);
            }
            let (mut slug, mut k) = (base.clone(), i + 1);
            while !seen.insert(slug.clone()) {
                slug = format!("{base}-{k}");
                k += 1;
            }
            slug
        })
        .collect()
}

fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

fn write_atomic(path: &Path, contents: &str) -> anyhow::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// What one plot shows besides its curves.
struct Plot<'a> {
    title: String,
    x_desc: &'a str,
    y_desc: &'a str,
    /// A dashed reference line (chance, perfect calibration) and its legend entry.
    reference: Option<(&'a str, Vec<(f64, f64)>)>,
    legend: SeriesLabelPosition,
    markers: bool,
    /// Shown in place of the curves when there is none.
    empty: &'a str,
}

/// Curves of series with both classes; single-class and empty series are skipped (the summary
/// says so).
fn two_class<'e, 'a>(evals: &'e [SeriesEval<'a>]) -> impl Iterator<Item = &'e SeriesEval<'a>> {
    evals.iter().filter(|e| !e.data.labels.is_empty() && !e.data.single_class())
}

fn roc_svg(title: &str, evals: &[SeriesEval<'_>]) -> anyhow::Result<String> {
    let curves: Vec<_> =
        two_class(evals).map(|e| (e.name, metrics::roc_curve(&e.data.scores, &e.data.labels))).collect();
    let plot = Plot {
        title: format!("ROC: {title}"),
        x_desc: "false-positive rate",
        y_desc: "true-positive rate",
        reference: Some(("chance", vec![(0.0, 0.0), (1.0, 1.0)])),
        legend: SeriesLabelPosition::LowerRight,
        markers: false,
        empty: "no curve: no series with both classes",
    };
    chart_svg(&plot, &curves)
}

fn pr_svg(title: &str, labels: &[bool], evals: &[SeriesEval<'_>]) -> anyhow::Result<String> {
    let curves: Vec<_> = two_class(evals)
        .map(|e| {
            // Steps: each precision holds from the previous recall to its own, as in average precision.
            let pts = metrics::pr_curve(&e.data.scores, &e.data.labels);
            let mut steps = Vec::with_capacity(2 * pts.len());
            let mut prev_recall = 0.0;
            for (r, p) in pts {
                steps.extend([(prev_recall, p), (r, p)]);
                prev_recall = r;
            }
            (e.name, steps)
        })
        .collect();
    let prevalence = labels.iter().filter(|l| **l).count() as f64 / labels.len().max(1) as f64;
    let plot = Plot {
        title: format!("Precision-recall: {title}"),
        x_desc: "recall",
        y_desc: "precision",
        reference: (!labels.is_empty()).then(|| ("chance (prevalence)", vec![(0.0, prevalence), (1.0, prevalence)])),
        legend: SeriesLabelPosition::LowerLeft,
        markers: false,
        empty: "no curve: no series with both classes",
    };
    chart_svg(&plot, &curves)
}

fn reliability_svg(title: &str, evals: &[SeriesEval<'_>]) -> anyhow::Result<String> {
    // Defined for one class too (observed rates are then all 0 or all 1), so only empty series go.
    let curves: Vec<_> = evals
        .iter()
        .filter(|e| !e.data.labels.is_empty())
        .map(|e| {
            let bins = metrics::reliability(&e.data.scores, &e.data.labels, BINS);
            (e.name, bins.into_iter().filter(|(_, _, c)| *c > 0).map(|(p, y, _)| (p, y)).collect())
        })
        .collect();
    let plot = Plot {
        title: format!("Reliability: {title}"),
        x_desc: "mean predicted probability (10 bins)",
        y_desc: "observed insecure rate",
        reference: Some(("perfectly calibrated", vec![(0.0, 0.0), (1.0, 1.0)])),
        legend: SeriesLabelPosition::UpperLeft,
        markers: true,
        empty: "no curve: no scored examples",
    };
    chart_svg(&plot, &curves)
}

/// Renders curves on the unit square as an SVG document.
fn chart_svg(plot: &Plot<'_>, curves: &[(&str, Vec<(f64, f64)>)]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&plot.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc(plot.x_desc)
            .y_desc(plot.y_desc)
            .x_labels(11)
            .y_labels(11)
            .light_line_style(WHITE)
            .draw()?;
        if let Some((name, pts)) = &plot.reference {
            let style = ShapeStyle::from(&BLACK.mix(0.45)).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(pts.iter().copied(), 6, 4, style))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        for (i, (name, points)) in curves.iter().enumerate() {
            let style = PALETTE[i % PALETTE.len()].stroke_width(2);
            // Off-range scores would draw outside the axes.
            let points = points.iter().map(|(x, y)| (x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)));
            let line = LineSeries::new(points, style);
            let line = if plot.markers { line.point_size(3) } else { line };
            chart
                .draw_series(line)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        if curves.is_empty() {
            let (w, h) = PLOT_SIZE;
            let grey = BLACK.mix(0.6);
            let style = TextStyle::from(("sans-serif", 18)).color(&grey).pos(Pos::new(HPos::Center, VPos::Center));
            root.draw(&Text::new(plot.empty, (w as i32 / 2, h as i32 / 2), style))?;
        }
        chart
            .configure_series_labels()
            .position(plot.legend.clone())
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.5))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(sections: Vec<Section<'a>>) -> ReportInput<'a> {
        ReportInput {
            version: "v42",
            created: "2025-01-02T03:04:05Z",
            decision: "published",
            training: vec![("corpus snippets".to_owned(), "2927".to_owned())],
            sections,
            threshold: 0.5,
        }
    }

    fn file_names(paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn two_series_report_has_plots_with_legends_and_evaluate_figures() {
        let labels = [true, false, true, false, true, false, false, true, false, false, true, false];
        let candidate = [0.9, 0.2, 0.8, 0.3, 0.7, 0.1, 0.4, 0.6, 0.35, 0.05, 0.95, 0.5];
        let baseline = [0.6, 0.5, 0.4, 0.45, 0.7, 0.3, 0.55, 0.5, 0.2, 0.25, 0.65, 0.6];
        let section = Section {
            title: "Newest events (last 7 days)",
            labels: &labels,
            series: vec![
                Series { name: "candidate", scores: &candidate },
                Series { name: "baseline", scores: &baseline },
            ],
            languages: vec![("python".to_owned(), (0..12).collect()), ("rust".to_owned(), vec![0, 1, 99])],
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("run");
        let paths = write_report(&out, &input(vec![section])).expect("report");
        assert_eq!(
            file_names(&paths),
            ["roc-newest-events-last-7-days.svg", "pr-newest-events-last-7-days.svg"]
                .into_iter()
                .chain(["reliability-newest-events-last-7-days.svg", "summary.md"])
                .collect::<Vec<_>>()
        );
        for svg_path in &paths[..3] {
            let svg = std::fs::read_to_string(svg_path).expect("read svg");
            assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", svg_path.display());
            assert!(svg.trim_end().ends_with("</svg>"));
            assert!(svg.contains("<polyline") || svg.contains("<path"));
            assert!(svg.contains(">\ncandidate\n<") || svg.contains(">candidate<"), "legend in {}", svg_path.display());
            assert!(svg.contains("baseline"));
            assert!(svg.contains("<text"));
        }
        let md = std::fs::read_to_string(&paths[3]).expect("read summary");
        assert!(md.starts_with("# Retraining report: v42"));
        assert!(md.contains("2025-01-02T03:04:05Z") && md.contains("Decision: published"));
        assert!(md.contains("| corpus snippets | 2927 |"));
        for (name, scores) in [("candidate", &candidate[..]), ("baseline", &baseline[..])] {
            let r = metrics::evaluate(scores, &labels, 0.5);
            let row = format!(
                "| {name} | 12 | 5 | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
                r.roc_auc, r.pr_auc, r.log_loss, r.brier, r.calibration_error, r.precision, r.recall
            );
            assert!(md.contains(&row), "missing {row} in\n{md}");
        }
        // rust: 2 examples in range (index 99 ignored), both classes.
        assert!(md.contains("| rust | 2 | 1 |"));
        assert!(md.lines().any(|l| l.starts_with("| rust |") && l.ends_with(" fewer than 10 examples |")));
        assert!(md.lines().any(|l| l.starts_with("| python | 12 | 5 |") && l.ends_with("|  |")));
        assert!(md.contains("![ROC curves: Newest events (last 7 days)](roc-newest-events-last-7-days.svg)"));
        assert!(md.contains("(pr-newest-events-last-7-days.svg)"));
        assert!(md.contains("(reliability-newest-events-last-7-days.svg)"));
        assert!(
            !out.read_dir().expect("dir").any(|e| e.expect("entry").file_name().to_string_lossy().ends_with(".tmp"))
        );
    }

    #[test]
    fn empty_and_single_class_sections_write_notes_instead_of_curves() {
        let labels = [false; 5];
        let scores = [0.1, 0.2, f64::NAN, 0.9, 0.3];
        let sections = vec![
            Section { title: "empty", labels: &[], series: vec![Series { name: "m", scores: &[] }], languages: vec![] },
            Section { title: "no models", labels: &labels, series: vec![], languages: vec![] },
            Section {
                title: "all secure",
                labels: &labels,
                series: vec![Series { name: "m", scores: &scores }],
                languages: vec![("go".to_owned(), vec![0, 2])],
            },
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write_report(dir.path(), &input(sections)).expect("report");
        assert_eq!(paths.len(), 3 * 3 + 1);
        let md = std::fs::read_to_string(dir.path().join("summary.md")).expect("summary");
        assert!(md.contains("| m | 0 | 0 | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"));
        assert!(md.contains("`m`: no examples to evaluate"));
        assert!(md.contains("No model was scored on this set."));
        assert!(md.contains("`m`: non-finite scores left out: 1."));
        assert!(md.contains("`m`: the labels hold one class only"));
        assert!(md.contains("| go | 2 | 0 | n/a |"));
        assert!(md.contains("fewer than 10 examples; single class |"));
        let roc = std::fs::read_to_string(dir.path().join("roc-all-secure.svg")).expect("roc");
        assert!(roc.contains("no curve"));
        let reliability = std::fs::read_to_string(dir.path().join("reliability-all-secure.svg")).expect("rel");
        assert!(reliability.contains(">\nm\n<") || reliability.contains(">m<"));
        assert!(!reliability.contains("NaN"));
    }

    #[test]
    fn mismatched_lengths_compare_the_common_prefix() {
        let labels = [true, false, true];
        let scores = [0.9, 0.1];
        let sections = vec![Section {
            title: "x",
            labels: &labels,
            series: vec![Series { name: "m", scores: &scores }],
            languages: vec![],
        }];
        let dir = tempfile::tempdir().expect("tempdir");
        write_report(dir.path(), &input(sections)).expect("report");
        let md = std::fs::read_to_string(dir.path().join("summary.md")).expect("summary");
        assert!(md.contains("| m | 2 | 1 | 1.0000 |"));
        assert!(md.contains("2 scores for 3 labels; only the first 2 pairs are compared"));
    }

    #[test]
    fn slugs_are_lowercase_ascii_unique_and_never_empty() {
        assert_eq!(slug("Corpus: held-out families (2025)"), "corpus-held-out-families-2025");
        assert_eq!(slug("  --Ünïcode--  "), "n-code");
        let s = |title| Section { title, labels: &[], series: vec![], languages: vec![] };
        assert_eq!(
            section_slugs(&[s("A b"), s("a-b-2"), s("a-b"), s("ü"), s("")]),
            ["a-b", "a-b-2", "a-b-3", "section-4", "section-5"]
        );
    }

    #[test]
    fn write_errors_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("occupied");
        std::fs::write(&file, "").expect("write");
        let err = write_report(&file, &input(vec![])).expect_err("a file is not a directory");
        assert!(format!("{err:#}").contains("occupied"));
    }

    #[test]
    fn progress_bar_is_hidden_off_a_terminal() {
        let bar = progress(3, "scoring");
        assert_eq!(bar.length(), Some(3));
        assert_eq!(bar.message(), "scoring");
        if !std::io::stderr().is_terminal() {
            assert!(bar.is_hidden());
        }
    }
}
