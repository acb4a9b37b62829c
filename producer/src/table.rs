//! Column tables for `job list` and `runner list`, laid out with `comfy-table`: no borders, a
//! header line, each column at least as wide as it always was, wider when a value needs it.
//!
//! Layout only; the commands choose the columns and fill the rows.

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, Width, presets};

/// One column: its header, its least width, how it aligns, and the spaces after it.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub width: u16,
    pub align: Align,
    /// Spaces between this column and the next (none after the last).
    pub gap: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table of `columns` over `rows`, one line per row after the header, with no line end.
pub fn render(columns: &[Column], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    // Never wrapped to the terminal: a script reads these lines as they are.
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(columns.iter().map(|column| column.header));
    for row in rows {
        table.add_row(row);
    }
    for (index, column) in columns.iter().enumerate() {
        let Some(target) = table.column_mut(index) else { continue };
        // The gap is the column's right padding, and comfy-table counts padding in the width.
        target.set_padding((0, column.gap));
        target.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(column.width + column.gap)));
        if column.align == Align::Right {
            target.set_cell_alignment(CellAlignment::Right);
        }
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: [Column; 3] = [
        Column { header: "ID", width: 6, align: Align::Left, gap: 2 },
        Column { header: "NAME", width: 5, align: Align::Left, gap: 1 },
        Column { header: "N", width: 3, align: Align::Right, gap: 0 },
    ];

    fn row(values: [&str; 3]) -> Vec<String> {
        values.iter().map(|value| (*value).to_owned()).collect()
    }

    #[test]
    fn columns_keep_their_width_and_alignment() {
        let table = render(&COLUMNS, vec![row(["a1", "x", "7"]), row(["b22", "yy", "12"])]);
        let expected = [
            format!("{:<6}  {:<5} {:>3}", "ID", "NAME", "N"),
            format!("{:<6}  {:<5} {:>3}", "a1", "x", "7"),
            format!("{:<6}  {:<5} {:>3}", "b22", "yy", "12"),
        ];
        assert_eq!(table, expected.join("\n"));
    }

    #[test]
    fn a_long_value_widens_its_column_for_every_row() {
        let table = render(&COLUMNS, vec![row(["a1", "a-long-name", "7"]), row(["b2", "y", "8"])]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[1], "a1      a-long-name   7");
        assert_eq!(lines[2], "b2      y             8");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(render(&COLUMNS, Vec::new()), format!("{:<6}  {:<5} {:>3}", "ID", "NAME", "N"));
    }
}
