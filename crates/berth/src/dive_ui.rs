//! `berth dive`'s terminal UI (ratatui + crossterm) on top of a
//! `berth_dive::Analysis`: dive's panes and keys. The terminal is put
//! back (raw mode off, main screen) on every way out: return, error and
//! panic.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::time::Duration;

use anyhow::{Context, Result};
use berth_dive::gofmt::human_bytes;
use berth_dive::tree::{FileInfo, ROOT};
use berth_dive::Analysis;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::crossterm::ExecutableCommand;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::{DefaultTerminal, Frame};

/// Smallest terminal the panes fit in.
const MIN_W: u16 = 60;
const MIN_H: u16 = 16;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Diff {
    Unmodified,
    Added,
    Modified,
    Removed,
}

struct DNode {
    name: String,
    info: FileInfo,
    diff: Diff,
    children: BTreeMap<String, usize>,
    size: i64,
}

/// The file tree shown for a layer: layers 0..=k stacked, changes marked
/// for layer k only (or, aggregated, for layers 1..=k).
struct View {
    nodes: Vec<DNode>,
}

impl View {
    fn build(a: &Analysis, k: usize, aggregated: bool) -> View {
        let mut v = View {
            nodes: vec![DNode {
                name: String::new(),
                info: FileInfo::default(),
                diff: Diff::Unmodified,
                children: BTreeMap::new(),
                size: 0,
            }],
        };
        for j in 0..=k {
            let mark = if aggregated { j >= 1 } else { j == k };
            let t = &a.layers[j].data.tree;
            // An opaque directory hides what the layers beneath put in it.
            for d in &a.layers[j].data.opaque {
                let parts: Vec<&str> = d
                    .trim_matches('/')
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .collect();
                if let Some(at) = v.find(&parts) {
                    let kids: Vec<(String, usize)> = v.nodes[at]
                        .children
                        .iter()
                        .map(|(k, &c)| (k.clone(), c))
                        .collect();
                    for (name, c) in kids {
                        if mark {
                            v.mark_removed(c);
                        } else {
                            v.nodes[at].children.remove(&name);
                        }
                    }
                }
            }
            // Parents before children.
            let mut stack: Vec<u32> = t.node(ROOT).children.values().rev().copied().collect();
            while let Some(id) = stack.pop() {
                let n = t.node(id);
                stack.extend(n.children.values().rev().copied());
                let path = t.path(id);
                let parts: Vec<&str> = path
                    .trim_matches('/')
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .collect();
                if n.is_whiteout() {
                    if let Some(at) = v.find(&parts) {
                        if mark {
                            v.mark_removed(at);
                        } else {
                            v.detach(&parts);
                        }
                    }
                    continue;
                }
                let (at, existed) = v.ensure(&parts, mark);
                if n.info.path.is_empty() {
                    continue;
                }
                let old = &v.nodes[at];
                let changed = old.info.type_flag != n.info.type_flag
                    || old.info.hash != n.info.hash
                    || old.info.file_mode != n.info.file_mode
                    || old.info.uid != n.info.uid
                    || old.info.gid != n.info.gid;
                let diff = match (mark, existed && old.diff != Diff::Removed) {
                    (false, _) => Diff::Unmodified,
                    (true, false) => Diff::Added,
                    (true, true) if changed && !n.info.is_dir => Diff::Modified,
                    (true, true) => old.diff,
                };
                let node = &mut v.nodes[at];
                node.info = n.info.clone();
                node.diff = diff;
            }
        }
        v.finish(0);
        v
    }

    fn find(&self, parts: &[&str]) -> Option<usize> {
        let mut at = 0;
        for p in parts {
            at = *self.nodes[at].children.get(*p)?;
        }
        Some(at)
    }

    /// The node at `parts`, made (as added when `mark`) if missing.
    fn ensure(&mut self, parts: &[&str], mark: bool) -> (usize, bool) {
        let mut at = 0;
        let mut existed = true;
        for p in parts {
            at = match self.nodes[at].children.get(*p) {
                Some(&c) => c,
                None => {
                    existed = false;
                    let id = self.nodes.len();
                    self.nodes.push(DNode {
                        name: p.to_string(),
                        info: FileInfo {
                            is_dir: true,
                            ..FileInfo::default()
                        },
                        diff: if mark { Diff::Added } else { Diff::Unmodified },
                        children: BTreeMap::new(),
                        size: 0,
                    });
                    self.nodes[at].children.insert(p.to_string(), id);
                    id
                }
            };
        }
        (at, existed)
    }

    fn mark_removed(&mut self, at: usize) {
        self.nodes[at].diff = Diff::Removed;
        let kids: Vec<usize> = self.nodes[at].children.values().copied().collect();
        for c in kids {
            self.mark_removed(c);
        }
    }

    fn detach(&mut self, parts: &[&str]) {
        if let Some((last, parent)) = parts.split_last() {
            if let Some(p) = self.find(parent) {
                self.nodes[p].children.remove(*last);
            }
        }
    }

    /// Sizes bottom-up; a directory is modified if something below it
    /// changed.
    fn finish(&mut self, at: usize) -> (i64, bool) {
        let kids: Vec<usize> = self.nodes[at].children.values().copied().collect();
        let mut size = self.nodes[at].info.size.max(0);
        let mut changed = false;
        let removed = self.nodes[at].diff == Diff::Removed;
        for c in kids {
            let (s, ch) = self.finish(c);
            if removed || self.nodes[c].diff != Diff::Removed {
                size += s;
            }
            changed |= ch;
        }
        let n = &mut self.nodes[at];
        n.size = size;
        if n.diff == Diff::Unmodified && changed {
            n.diff = Diff::Modified;
        }
        (size, changed || n.diff != Diff::Unmodified)
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Pane {
    Layers,
    Files,
}

struct Row {
    node: usize,
    depth: usize,
    path: String,
    last: Vec<bool>,
}

struct App<'a> {
    a: &'a Analysis,
    title: String,
    pane: Pane,
    layer: usize,
    layer_top: usize,
    aggregated: bool,
    view: View,
    collapsed: HashSet<String>,
    hide: [bool; 4],
    attributes: bool,
    sort_size: bool,
    filter: String,
    filter_re: Option<regex::Regex>,
    editing_filter: bool,
    message: String,
    cursor: usize,
    top: usize,
    rows: Vec<Row>,
}

impl<'a> App<'a> {
    fn new(a: &'a Analysis, title: String) -> App<'a> {
        let mut app = App {
            a,
            title,
            pane: Pane::Layers,
            layer: 0,
            layer_top: 0,
            aggregated: false,
            view: View::build(a, 0, false),
            collapsed: HashSet::new(),
            hide: [false; 4],
            attributes: true,
            sort_size: false,
            filter: String::new(),
            filter_re: None,
            editing_filter: false,
            message: String::new(),
            cursor: 0,
            top: 0,
            rows: Vec::new(),
        };
        app.refresh_rows();
        app
    }

    fn rebuild(&mut self) {
        self.view = View::build(self.a, self.layer, self.aggregated);
        self.refresh_rows();
    }

    fn visible(&self, at: usize, path: &str) -> bool {
        let n = &self.view.nodes[at];
        let idx = match n.diff {
            Diff::Unmodified => 0,
            Diff::Added => 1,
            Diff::Modified => 2,
            Diff::Removed => 3,
        };
        if n.children.is_empty() || !n.info.is_dir {
            if self.hide[idx] {
                return false;
            }
            return self.filter_re.as_ref().is_none_or(|re| re.is_match(path));
        }
        // A directory shows if anything below it does (or it matches).
        let own = !self.hide[idx] && self.filter_re.as_ref().is_none_or(|re| re.is_match(path));
        own && self.filter_re.is_none()
            || n.children
                .iter()
                .any(|(name, &c)| self.visible(c, &format!("{path}/{name}")))
    }

    fn refresh_rows(&mut self) {
        let mut rows = Vec::new();
        self.walk(0, "", 0, &mut Vec::new(), &mut rows);
        self.rows = rows;
        if self.cursor >= self.rows.len() {
            self.cursor = self.rows.len().saturating_sub(1);
        }
    }

    fn walk(&self, at: usize, path: &str, depth: usize, last: &mut Vec<bool>, rows: &mut Vec<Row>) {
        let n = &self.view.nodes[at];
        let mut kids: Vec<(&String, usize)> = n
            .children
            .iter()
            .map(|(k, &v)| (k, v))
            .filter(|(name, c)| self.visible(*c, &format!("{path}/{name}")))
            .collect();
        if self.sort_size {
            kids.sort_by(|x, y| {
                self.view.nodes[y.1]
                    .size
                    .cmp(&self.view.nodes[x.1].size)
                    .then(x.0.cmp(y.0))
            });
        }
        let count = kids.len();
        for (i, (name, c)) in kids.into_iter().enumerate() {
            let p = format!("{path}/{name}");
            last.push(i + 1 == count);
            rows.push(Row {
                node: c,
                depth,
                path: p.clone(),
                last: last.clone(),
            });
            if !self.collapsed.contains(&p) {
                self.walk(c, &p, depth + 1, last, rows);
            }
            last.pop();
        }
    }

    /// Handles a key; false means quit.
    fn key(&mut self, k: KeyEvent) -> bool {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        if self.editing_filter {
            match k.code {
                KeyCode::Enter | KeyCode::Esc => self.editing_filter = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                    self.apply_filter();
                }
                KeyCode::Char('c') if ctrl => return false,
                KeyCode::Char(c) if !ctrl => {
                    self.filter.push(c);
                    self.apply_filter();
                }
                _ => {}
            }
            return true;
        }
        match (k.code, ctrl) {
            (KeyCode::Char('q'), false) | (KeyCode::Char('c'), true) => return false,
            (KeyCode::Tab, _) | (KeyCode::BackTab, _) => {
                self.pane = if self.pane == Pane::Layers {
                    Pane::Files
                } else {
                    Pane::Layers
                };
            }
            (KeyCode::Char('f'), true) | (KeyCode::Char('/'), false) => self.editing_filter = true,
            (KeyCode::Char('a'), true) if self.pane == Pane::Layers => {
                self.aggregated = true;
                self.rebuild();
            }
            (KeyCode::Char('l'), true) if self.pane == Pane::Layers => {
                self.aggregated = false;
                self.rebuild();
            }
            (KeyCode::Char(' '), true) if self.pane == Pane::Layers => {
                self.aggregated = !self.aggregated;
                self.rebuild();
            }
            (KeyCode::Up | KeyCode::Char('k'), _) => self.move_by(-1),
            (KeyCode::Down | KeyCode::Char('j'), _) => self.move_by(1),
            (KeyCode::PageUp, _) => self.move_by(-10),
            (KeyCode::PageDown, _) => self.move_by(10),
            (KeyCode::Char(' '), true) if self.pane == Pane::Files => {
                // Collapse all, or expand all when everything is collapsed.
                let dirs: Vec<String> = self
                    .rows
                    .iter()
                    .filter(|r| !self.view.nodes[r.node].children.is_empty())
                    .map(|r| r.path.clone())
                    .collect();
                if dirs.iter().all(|d| self.collapsed.contains(d)) {
                    self.collapsed.clear();
                } else {
                    self.collapsed.extend(dirs);
                }
                self.refresh_rows();
            }
            (KeyCode::Char(' ') | KeyCode::Right | KeyCode::Left, false)
                if self.pane == Pane::Files =>
            {
                if let Some(r) = self.rows.get(self.cursor) {
                    if !self.view.nodes[r.node].children.is_empty() {
                        let p = r.path.clone();
                        let collapse = match k.code {
                            KeyCode::Left => true,
                            KeyCode::Right => false,
                            _ => !self.collapsed.contains(&p),
                        };
                        if collapse {
                            self.collapsed.insert(p);
                        } else {
                            self.collapsed.remove(&p);
                        }
                        self.refresh_rows();
                    }
                }
            }
            (KeyCode::Char(c @ ('a' | 'r' | 'm' | 'u')), true) if self.pane == Pane::Files => {
                let i = match c {
                    'u' => 0,
                    'a' => 1,
                    'm' => 2,
                    _ => 3,
                };
                self.hide[i] = !self.hide[i];
                self.refresh_rows();
            }
            // Ctrl+M arrives as Enter on most terminals.
            (KeyCode::Enter, _) if self.pane == Pane::Files => {
                self.hide[2] = !self.hide[2];
                self.refresh_rows();
            }
            (KeyCode::Char('b'), true) => self.attributes = !self.attributes,
            (KeyCode::Char('o'), true) => {
                self.sort_size = !self.sort_size;
                self.refresh_rows();
            }
            _ => {}
        }
        true
    }

    fn apply_filter(&mut self) {
        if self.filter.is_empty() {
            self.filter_re = None;
            self.message.clear();
        } else {
            match regex::Regex::new(&self.filter) {
                Ok(re) => {
                    self.filter_re = Some(re);
                    self.message.clear();
                }
                Err(_) => self.message = "invalid regex".into(),
            }
        }
        self.refresh_rows();
    }

    fn move_by(&mut self, d: isize) {
        match self.pane {
            Pane::Layers => {
                let n = self.a.layers.len() as isize;
                let l = (self.layer as isize + d).clamp(0, (n - 1).max(0)) as usize;
                if l != self.layer {
                    self.layer = l;
                    self.rebuild();
                }
            }
            Pane::Files => {
                let n = self.rows.len() as isize;
                self.cursor = (self.cursor as isize + d).clamp(0, (n - 1).max(0)) as usize;
            }
        }
    }

    fn draw(&mut self, f: &mut Frame) {
        let area = f.area();
        if area.width < MIN_W || area.height < MIN_H {
            let msg = format!(
                "terminal too small ({}x{}); berth dive needs {MIN_W}x{MIN_H} (q quits)",
                area.width, area.height
            );
            f.render_widget(
                Paragraph::new(msg).wrap(ratatui::widgets::Wrap { trim: true }),
                area,
            );
            return;
        }
        let outer = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Min(1), Constraint::Length(1)])
            .split(area);
        let cols = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
            .split(outer[0]);
        let left = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
            .split(cols[0]);
        self.draw_layers(f, left[0]);
        self.draw_details(f, left[1]);
        self.draw_files(f, cols[1]);
        let keys = if self.editing_filter {
            format!(
                "Filter (regex): {}▏ Enter done  {}",
                self.filter, self.message
            )
        } else if self.pane == Pane::Layers {
            "^C/q Quit  Tab Switch  ^F Filter  ^A Aggregated  ^L This layer".to_string()
        } else {
            "^C/q Quit  Tab  Space Collapse  ^Space All  ^A/^R/^M/^U Added/Removed/Modified/Unmodified  ^B Attr  ^O Sort".to_string()
        };
        f.render_widget(
            Paragraph::new(keys).style(Style::default().add_modifier(Modifier::REVERSED)),
            outer[1],
        );
    }

    fn block(&self, title: String, focused: bool) -> Block<'static> {
        let style = if focused {
            Style::default()
                .fg(Color::Cyan)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        Block::default()
            .borders(Borders::ALL)
            .title(Span::styled(title, style))
    }

    fn draw_layers(&mut self, f: &mut Frame, r: Rect) {
        let mode = if self.aggregated {
            "aggregated"
        } else {
            "this layer"
        };
        let block = self.block(format!(" Layers ({mode}) "), self.pane == Pane::Layers);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let h = inner.height.saturating_sub(1) as usize;
        if self.layer < self.layer_top {
            self.layer_top = self.layer;
        } else if h > 0 && self.layer >= self.layer_top + h {
            self.layer_top = self.layer + 1 - h;
        }
        let mut lines = vec![Line::styled(
            format!("{:>8}  {:<12} Command", "Size", "Digest"),
            Style::default().add_modifier(Modifier::BOLD),
        )];
        for l in self.a.layers.iter().skip(self.layer_top).take(h) {
            let digest = l.digest_id.strip_prefix("sha256:").unwrap_or(&l.digest_id);
            let cmd = if l.index == 0 {
                format!("FROM {}", &l.id[..l.id.len().min(15)])
            } else {
                l.command.replace('\n', "↵")
            };
            let text = format!(
                "{:>8}  {:<12} {}",
                human_bytes(l.size),
                &digest[..digest.len().min(12)],
                cmd
            );
            let style = if l.index == self.layer {
                Style::default().add_modifier(Modifier::REVERSED)
            } else {
                Style::default()
            };
            lines.push(Line::styled(text, style));
        }
        f.render_widget(Paragraph::new(lines), inner);
    }

    fn draw_details(&self, f: &mut Frame, r: Rect) {
        let block = self.block(format!(" Details: {} ", self.title), false);
        let inner = block.inner(r);
        f.render_widget(block, r);
        let a = self.a;
        let l = &a.layers[self.layer];
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let mut lines = vec![
            Line::from(vec![
                Span::styled("Layer digest: ", bold),
                Span::raw(l.digest_id.clone()),
            ]),
            Line::from(vec![
                Span::styled("Command: ", bold),
                Span::raw(l.command.replace('\n', "↵")),
            ]),
            Line::from(vec![
                Span::styled("Total Image size: ", bold),
                Span::raw(human_bytes(a.size_bytes)),
            ]),
            Line::from(vec![
                Span::styled("Potential wasted space: ", bold),
                Span::raw(human_bytes(a.wasted_bytes)),
            ]),
            Line::from(vec![
                Span::styled("Image efficiency score: ", bold),
                Span::raw(format!("{:.0} %", a.efficiency * 100.0)),
            ]),
            Line::from(vec![
                Span::styled("Reclaimable (berth): ", bold),
                Span::raw(human_bytes(a.extras.reclaimable_bytes)),
            ]),
            Line::styled(format!("{:>5} {:>10}  Path", "Count", "Total"), bold),
        ];
        for i in a
            .inefficiencies
            .iter()
            .take(inner.height.saturating_sub(7) as usize)
        {
            lines.push(Line::raw(format!(
                "{:>5} {:>10}  {}",
                i.count,
                human_bytes(i.cumulative_size as u64),
                i.path
            )));
        }
        f.render_widget(Paragraph::new(lines), inner);
    }

    fn draw_files(&mut self, f: &mut Frame, r: Rect) {
        let block = self.block(
            format!(
                " Layer {} contents{} ",
                self.layer,
                if self.sort_size { " (by size)" } else { "" }
            ),
            self.pane == Pane::Files,
        );
        let inner = block.inner(r);
        f.render_widget(block, r);
        let h = inner.height as usize;
        if self.cursor < self.top {
            self.top = self.cursor;
        } else if h > 0 && self.cursor >= self.top + h {
            self.top = self.cursor + 1 - h;
        }
        let mut lines = Vec::new();
        for (i, row) in self.rows.iter().enumerate().skip(self.top).take(h) {
            let n = &self.view.nodes[row.node];
            let color = match n.diff {
                Diff::Added => Color::Green,
                Diff::Removed => Color::Red,
                Diff::Modified => Color::Yellow,
                Diff::Unmodified => Color::Reset,
            };
            let mut s = String::new();
            if self.attributes {
                let dir = if n.info.is_dir || !n.children.is_empty() {
                    'd'
                } else {
                    '-'
                };
                s.push_str(&format!(
                    "{dir}{} {:>9} {:>8} ",
                    n.info.perm_string(),
                    format!("{}:{}", n.info.uid, n.info.gid),
                    human_bytes(n.size as u64)
                ));
            }
            for d in 0..row.depth {
                s.push_str(if row.last[d] { "   " } else { "│  " });
            }
            s.push_str(if row.last[row.depth] {
                "└─"
            } else {
                "├─"
            });
            s.push_str(
                if self.collapsed.contains(&row.path) && !n.children.is_empty() {
                    "⊕ "
                } else {
                    " "
                },
            );
            s.push_str(&n.name);
            if matches!(n.info.type_flag, b'1' | b'2') {
                s.push_str(&format!(" → {}", n.info.link_name));
            }
            let mut style = Style::default().fg(color);
            if i == self.cursor && self.pane == Pane::Files {
                style = style.add_modifier(Modifier::REVERSED);
            }
            lines.push(Line::styled(s, style));
        }
        f.render_widget(Paragraph::new(lines), inner);
    }
}

/// Puts the terminal back when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = io::stdout().execute(LeaveAlternateScreen);
    let _ = io::stdout().execute(ratatui::crossterm::cursor::Show);
}

/// Runs the UI until `q` or Ctrl+C.
pub fn run(a: &Analysis, title: String) -> Result<()> {
    use std::io::IsTerminal;
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        anyhow::bail!("the dive UI needs a terminal; use --json FILE or --ci for a report");
    }
    if a.layers.is_empty() {
        anyhow::bail!("the image has no layers to show");
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        hook(info);
    }));
    terminal::enable_raw_mode().context("switching the terminal to raw mode")?;
    let _restore = Restore;
    io::stdout()
        .execute(EnterAlternateScreen)
        .context("entering the alternate screen")?;
    let backend = ratatui::backend::CrosstermBackend::new(io::stdout());
    let mut term: DefaultTerminal =
        ratatui::Terminal::new(backend).context("opening the terminal")?;
    let mut app = App::new(a, title);
    loop {
        term.draw(|f| app.draw(f))?;
        if !event::poll(Duration::from_millis(250))? {
            continue;
        }
        match event::read()? {
            Event::Key(k) if k.kind != KeyEventKind::Release && !app.key(k) => break,
            Event::Resize(..) => term.autoresize()?,
            _ => {}
        }
    }
    Ok(())
}
