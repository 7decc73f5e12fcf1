//! NAME.svg: the outcome's panels side by side. (Stub until the library's chart module lands.)

use super::experiment::Panel;
use tamer::Result;

pub fn render(title: &str, panels: &[Panel]) -> Result<String> {
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\"><!-- {title}: {} panels --></svg>\n",
        panels.len()
    ))
}
