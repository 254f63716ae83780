//! A small, tolerant XML reader and writer for libvirt documents.
//!
//! It owns turning libvirt's XML (domain, network, device fragments) into an
//! [`Element`] tree that an engine can read and edit, and writing a tree back
//! with every attribute value and text escaped by [`crate::xml::escape`]. It
//! never validates against a schema and never resolves namespaces: elements
//! are matched by their local name (the part after `prefix:`), which is all
//! libvirt documents need. Unknown markup (comments, processing instructions,
//! a DOCTYPE) is skipped or kept, never an error, so a newer libvirt's output
//! still reads; only broken structure (an unclosed or mismatched tag) is.
//!
//! Written by hand rather than pulled in as a crate to keep engine
//! components small. The parser is iterative and refuses documents nested
//! deeper than [`MAX_DEPTH`], so neither reading nor writing nor dropping a
//! tree can overflow the guest's stack.

use crate::xml::escape;

/// The deepest nesting [`parse`] accepts. libvirt documents are under ten
/// levels deep; the bound keeps the recursive writer and `Drop` safe.
pub const MAX_DEPTH: usize = 256;

/// One node of an element's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    /// Character data, entities already decoded (CDATA sections too).
    Text(String),
    /// A comment, kept so that an edited document keeps the operator's notes.
    Comment(String),
}

/// An XML element: its name as written (with any prefix), its attributes in
/// document order (values decoded) and its content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Node>,
}

/// Why a document could not be read; `offset` is a byte offset into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlError {
    pub offset: usize,
    pub message: String,
}

impl std::fmt::Display for XmlError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "bad XML at byte {}: {}",
            self.offset, self.message
        )
    }
}

impl std::error::Error for XmlError {}

/// The local part of a possibly prefixed name (`openidcs:vm` → `vm`).
fn local_part(name: &str) -> &str {
    match name.rfind(':') {
        Some(colon) => &name[colon + 1..],
        None => name,
    }
}

impl Element {
    /// An empty element named `name`.
    pub fn new(name: &str) -> Element {
        Element {
            name: name.to_owned(),
            attributes: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: set attribute `name` to `value` (written escaped).
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder: append a child element.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: append text (written escaped).
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// The name without its namespace prefix.
    pub fn local_name(&self) -> &str {
        local_part(&self.name)
    }

    /// The value of attribute `name` (matched exactly, prefix included).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Set (or replace, keeping its position) attribute `name`.
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attributes.iter_mut().find(|(key, _)| key == name) {
            Some(slot) => slot.1 = value,
            None => self.attributes.push((name.to_owned(), value)),
        }
    }

    /// Remove attribute `name` if present.
    pub fn remove_attr(&mut self, name: &str) {
        self.attributes.retain(|(key, _)| key != name);
    }

    /// The child elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            _ => None,
        })
    }

    /// The child elements, mutable, in order.
    pub fn elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            _ => None,
        })
    }

    /// The child elements whose local name is `local_name`.
    pub fn children_named<'a>(
        &'a self,
        local_name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements()
            .filter(move |element| element.local_name() == local_name)
    }

    /// The first child element whose local name is `local_name`.
    pub fn child(&self, local_name: &str) -> Option<&Element> {
        self.elements()
            .find(|element| element.local_name() == local_name)
    }

    /// The first child element whose local name is `local_name`, mutable.
    pub fn child_mut(&mut self, local_name: &str) -> Option<&mut Element> {
        self.elements_mut()
            .find(|element| element.local_name() == local_name)
    }

    /// Run `edit` on the first child named `local_name`, appending an empty
    /// one first when there is none; answers what `edit` answers.
    pub fn edit_child<R>(&mut self, local_name: &str, edit: impl FnOnce(&mut Element) -> R) -> R {
        if let Some(child) = self.child_mut(local_name) {
            return edit(child);
        }
        let mut child = Element::new(local_name);
        let answer = edit(&mut child);
        self.push(child);
        answer
    }

    /// Follow a path of local names (`["devices", "graphics"]`), taking the
    /// first match at each step.
    pub fn path(&self, path: &[&str]) -> Option<&Element> {
        let mut current = self;
        for step in path {
            current = current.child(step)?;
        }
        Some(current)
    }

    /// The element's own text (its text children joined), trimmed.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for node in &self.children {
            if let Node::Text(part) = node {
                text.push_str(part);
            }
        }
        text.trim().to_owned()
    }

    /// Replace the element's text, keeping its child elements.
    pub fn set_text(&mut self, text: impl Into<String>) {
        self.children.retain(|node| !matches!(node, Node::Text(_)));
        self.children.insert(0, Node::Text(text.into()));
    }

    /// Append a child element.
    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Keep only the child elements for which `keep` answers true (text and
    /// comments stay).
    pub fn retain_elements(&mut self, mut keep: impl FnMut(&Element) -> bool) {
        self.children.retain(|node| match node {
            Node::Element(element) => keep(element),
            _ => true,
        });
    }

    /// Remove every child element whose local name is `local_name`.
    pub fn remove_children(&mut self, local_name: &str) {
        self.retain_elements(|element| element.local_name() != local_name);
    }

    /// Write the element (and its content) as XML text.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        write_element(self, &mut out);
        out
    }
}

fn write_element(element: &Element, out: &mut String) {
    out.push('<');
    out.push_str(&element.name);
    for (name, value) in &element.attributes {
        out.push(' ');
        out.push_str(name);
        out.push_str("='");
        out.push_str(&escape(value));
        out.push('\'');
    }
    if element.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for node in &element.children {
        match node {
            Node::Element(child) => write_element(child, out),
            Node::Text(text) => out.push_str(&escape(text)),
            Node::Comment(comment) => {
                // `--` may not appear inside a comment; breaking it keeps the
                // output well formed whatever the comment held.
                out.push_str("<!--");
                out.push_str(&comment.replace("--", "- -"));
                out.push_str("-->");
            }
        }
    }
    out.push_str("</");
    out.push_str(&element.name);
    out.push('>');
}

/// Decode the five predefined entities and numeric character references.
/// An unknown or malformed reference is kept as written (tolerant reading).
pub fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let decoded = after.find(';').and_then(|semicolon| {
            let entity = &after[..semicolon];
            let character = match entity {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let code = if let Some(hex) = entity
                        .strip_prefix("#x")
                        .or_else(|| entity.strip_prefix("#X"))
                    {
                        u32::from_str_radix(hex, 16).ok()
                    } else if let Some(decimal) = entity.strip_prefix('#') {
                        decimal.parse::<u32>().ok()
                    } else {
                        None
                    };
                    code.and_then(char::from_u32)
                }
            };
            character.map(|character| (character, semicolon))
        });
        match decoded {
            Some((character, semicolon)) => {
                out.push(character);
                rest = &after[semicolon + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A cursor over the document text.
struct Reader<'a> {
    text: &'a str,
    position: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.position..]
    }

    fn error(&self, message: impl Into<String>) -> XmlError {
        XmlError {
            offset: self.position,
            message: message.into(),
        }
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start();
        self.position += rest.len() - trimmed.len();
    }

    /// Move past `terminator`, answering what stood before it.
    fn take_until(&mut self, terminator: &str, what: &str) -> Result<&'a str, XmlError> {
        let rest = self.rest();
        match rest.find(terminator) {
            Some(end) => {
                self.position += end + terminator.len();
                Ok(&rest[..end])
            }
            None => Err(self.error(format!("unterminated {what}"))),
        }
    }

    /// Skip a `<!DOCTYPE ...>`, including an internal subset in brackets.
    fn skip_doctype(&mut self) -> Result<(), XmlError> {
        let mut depth = 0usize;
        for (index, character) in self.rest().char_indices() {
            match character {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                '>' if depth == 0 => {
                    self.position += index + 1;
                    return Ok(());
                }
                _ => {}
            }
        }
        Err(self.error("unterminated DOCTYPE"))
    }

    fn name(&mut self) -> Result<&'a str, XmlError> {
        let rest = self.rest();
        let end = rest
            .find(|character: char| {
                character.is_whitespace() || matches!(character, '>' | '/' | '=' | '<')
            })
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(self.error("expected a name"));
        }
        self.position += end;
        Ok(&rest[..end])
    }

    /// Read the attributes of a start tag and its end; answers whether the
    /// tag was self-closing (`/>`).
    fn attributes(&mut self, element: &mut Element) -> Result<bool, XmlError> {
        loop {
            self.skip_whitespace();
            let rest = self.rest();
            if rest.starts_with("/>") {
                self.position += 2;
                return Ok(true);
            }
            if rest.starts_with('>') {
                self.position += 1;
                return Ok(false);
            }
            if rest.is_empty() {
                return Err(self.error(format!("unterminated tag <{}>", element.name)));
            }
            let name = self.name()?;
            self.skip_whitespace();
            if !self.rest().starts_with('=') {
                return Err(self.error(format!("attribute {name} has no value")));
            }
            self.position += 1;
            self.skip_whitespace();
            let quote = match self.rest().chars().next() {
                Some(quote @ ('"' | '\'')) => quote,
                _ => return Err(self.error(format!("attribute {name} value is not quoted"))),
            };
            self.position += 1;
            let value =
                self.take_until(if quote == '"' { "\"" } else { "'" }, "attribute value")?;
            element.attributes.push((name.to_owned(), unescape(value)));
        }
    }
}

/// Read a document and answer its root element.
///
/// Whitespace-only text between elements is dropped (libvirt indents its
/// output; keeping it would only make edited documents ragged); all other
/// text is kept and decoded.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    let mut reader = Reader {
        text: text.strip_prefix('\u{feff}').unwrap_or(text),
        position: 0,
    };
    // Open elements, innermost last; the root is finished when it pops.
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let rest = reader.rest();
        if rest.is_empty() {
            return Err(match stack.last() {
                Some(open) => reader.error(format!("<{}> is never closed", open.name)),
                None => reader.error("no root element"),
            });
        }
        if !rest.starts_with('<') {
            let end = rest.find('<').unwrap_or(rest.len());
            let raw = &rest[..end];
            reader.position += end;
            match stack.last_mut() {
                Some(parent) if !raw.trim().is_empty() => {
                    parent.children.push(Node::Text(unescape(raw)));
                }
                Some(_) => {}
                // Text outside the root: tolerated when blank, else refused.
                None if raw.trim().is_empty() => {}
                None => return Err(reader.error("text outside the root element")),
            }
            continue;
        }
        if rest.starts_with("<!--") {
            reader.position += 4;
            let comment = reader.take_until("-->", "comment")?;
            if let Some(parent) = stack.last_mut() {
                parent.children.push(Node::Comment(comment.to_owned()));
            }
            continue;
        }
        if rest.starts_with("<![CDATA[") {
            reader.position += 9;
            let data = reader.take_until("]]>", "CDATA section")?;
            match stack.last_mut() {
                Some(parent) => parent.children.push(Node::Text(data.to_owned())),
                None => return Err(reader.error("CDATA outside the root element")),
            }
            continue;
        }
        if rest.starts_with("<?") {
            reader.take_until("?>", "processing instruction")?;
            continue;
        }
        if rest.starts_with("<!") {
            reader.skip_doctype()?;
            continue;
        }
        if rest.starts_with("</") {
            reader.position += 2;
            let name = reader.name()?;
            reader.skip_whitespace();
            if !reader.rest().starts_with('>') {
                return Err(reader.error(format!("end tag </{name}> is not closed")));
            }
            reader.position += 1;
            let element = match stack.pop() {
                Some(element) => element,
                None => return Err(reader.error(format!("end tag </{name}> without a start"))),
            };
            if element.name != name {
                return Err(reader.error(format!(
                    "end tag </{name}> does not match <{}>",
                    element.name
                )));
            }
            match stack.last_mut() {
                Some(parent) => parent.children.push(Node::Element(element)),
                None => return Ok(element),
            }
            continue;
        }
        // A start tag.
        reader.position += 1;
        let mut element = Element::new(reader.name()?);
        let self_closing = reader.attributes(&mut element)?;
        if self_closing {
            match stack.last_mut() {
                Some(parent) => parent.children.push(Node::Element(element)),
                None => return Ok(element),
            }
        } else if stack.len() >= MAX_DEPTH {
            return Err(reader.error(format!("nested deeper than {MAX_DEPTH} elements")));
        } else {
            stack.push(element);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Element, Node, parse, unescape};

    #[test]
    fn reads_a_libvirt_document() {
        let xml = "<?xml version='1.0'?>\n<!-- generated -->\n<domain type='kvm' id=\"3\">\n  \
                   <name>web&amp;1</name>\n  <devices>\n    <graphics type='vnc' port='-1'/>\n  \
                   </devices>\n</domain>\n";
        let root = parse(xml).expect("parses");
        assert_eq!(root.name, "domain");
        assert_eq!(root.attr("type"), Some("kvm"));
        assert_eq!(root.attr("id"), Some("3"));
        assert_eq!(
            root.child("name").map(Element::text),
            Some("web&1".to_owned())
        );
        let graphics = root.path(&["devices", "graphics"]).expect("graphics");
        assert_eq!(graphics.attr("port"), Some("-1"));
    }

    #[test]
    fn matches_prefixed_names_by_local_name() {
        let root = parse("<metadata><o:vm xmlns:o='urn:x'><o:os name='d'/></o:vm></metadata>")
            .expect("parses");
        let vm = root.child("vm").expect("vm");
        assert_eq!(vm.name, "o:vm");
        assert_eq!(vm.child("os").and_then(|os| os.attr("name")), Some("d"));
    }

    #[test]
    fn decodes_entities_and_cdata() {
        assert_eq!(unescape("a&lt;b&gt;&quot;&apos;&#65;&#x42;"), "a<b>\"'AB");
        assert_eq!(unescape("&unknown; & bare"), "&unknown; & bare");
        let root = parse("<a><![CDATA[<raw>&]]></a>").expect("parses");
        assert_eq!(root.text(), "<raw>&");
    }

    #[test]
    fn refuses_broken_structure() {
        for broken in [
            "",
            "<a>",
            "<a></b>",
            "<a b=c/>",
            "<a b/>",
            "</a>",
            "<a><!-- x</a>",
            "text",
        ] {
            assert!(parse(broken).is_err(), "{broken:?} should be refused");
        }
    }

    #[test]
    fn tolerates_doctype_and_trailing_markup() {
        let root = parse("<!DOCTYPE d [<!ENTITY x 'y'>]><d/>\n<!-- end -->").expect("parses");
        assert_eq!(root.name, "d");
    }

    #[test]
    fn writes_escaped_and_reads_back_the_same_tree() {
        let element = Element::new("interface")
            .with_attr("type", "network")
            .with_child(Element::new("source").with_attr("network", "n'\"<&>"))
            .with_child(Element::new("description").with_text("a < b & c"));
        let xml = element.to_xml();
        assert!(
            !xml.contains("n'\""),
            "attribute value must be escaped: {xml}"
        );
        assert_eq!(parse(&xml).expect("parses"), element);
    }

    #[test]
    fn edits_keep_other_content() {
        let mut root = parse("<d><!-- keep --><a x='1'/><b/><a x='2'/></d>").expect("parses");
        root.retain_elements(|element| element.attr("x") != Some("1"));
        root.edit_child("c", |c| c.set_text("t"));
        root.child_mut("b").expect("b").set_attr("y", "2");
        assert_eq!(
            root.to_xml(),
            "<d><!-- keep --><b y='2'/><a x='2'/><c>t</c></d>"
        );
        assert!(matches!(root.children[0], Node::Comment(_)));
    }

    #[test]
    fn refuses_nesting_beyond_the_bound() {
        let nested = |depth: usize| format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        assert!(parse(&nested(super::MAX_DEPTH)).is_ok());
        assert!(parse(&nested(100_000)).is_err());
    }
}
