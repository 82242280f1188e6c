//! Go's `text/tabwriter` as upstream's buildctl configures it (minimum width 1, tab
//! width 8, padding 1, padding with tabs): cells end at `\t`, and each column of
//! consecutive lines that have it is padded with tabs to a common multiple of 8.

const TAB_WIDTH: usize = 8;
const PADDING: usize = 1;

/// The text of `lines` (each without its newline) aligned as Go's tabwriter would.
pub(crate) fn align(lines: &[String]) -> String {
    let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut out = String::new();
    let mut widths = Vec::new();
    format(&cells, 0, cells.len(), &mut widths, &mut out);
    out
}

/// Go's recursive `format`: the widths of the columns left of `widths.len()` are known;
/// finds the blocks of lines that have a cell in the next column.
fn format(
    cells: &[Vec<&str>],
    mut line0: usize,
    line1: usize,
    widths: &mut Vec<usize>,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        // A line has a cell in `column` when it has more than `column` terminated cells.
        if column + 1 >= cells[this].len() {
            this += 1;
            continue;
        }
        write_lines(cells, line0, this, widths, out);
        line0 = this;
        let mut width = 1;
        while this < line1 && column + 1 < cells[this].len() {
            width = width.max(text_width(cells[this][column]) + PADDING);
            this += 1;
        }
        widths.push(width);
        format(cells, line0, this, widths, out);
        widths.pop();
        line0 = this;
    }
    write_lines(cells, line0, line1, widths, out);
}

fn text_width(s: &str) -> usize {
    s.chars().count()
}

fn write_lines(cells: &[Vec<&str>], from: usize, to: usize, widths: &[usize], out: &mut String) {
    for line in &cells[from..to] {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j + 1 < line.len() {
                // A terminated cell: pad to its column's width with tabs.
                let width = widths.get(j).copied().unwrap_or(0);
                let cell_width = width.div_ceil(TAB_WIDTH) * TAB_WIDTH;
                let n = cell_width.saturating_sub(text_width(cell));
                for _ in 0..n.div_ceil(TAB_WIDTH) {
                    out.push('\t');
                }
            }
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_with_tabs_to_multiples_of_eight() {
        let lines = vec![
            "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED".to_string(),
            "abc\ttrue\t1.23kB\t".to_string(),
        ];
        // Column widths: max("ID","abc")+1 = 4 → 8; "RECLAIMABLE"+1 = 12 → 16;
        // "1.23kB"+1 = 7 → 8.
        assert_eq!(
            align(&lines),
            "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\nabc\ttrue\t\t1.23kB\t\n"
        );
    }

    #[test]
    fn a_line_without_the_column_ends_the_block() {
        let lines = vec![
            "ID:\tx".to_string(),
            "Description:\ty".to_string(),
            String::new(),
            "ID:\tz".to_string(),
        ];
        assert_eq!(align(&lines), "ID:\t\tx\nDescription:\ty\n\nID:\tz\n");
    }
}
