"""Markdown rendering: structure, sanitising of hostile input, plain text."""

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsroom.rendering import ALLOWED_TAGS, html_to_text, mail_html, render_html, render_text

# --- Structure -------------------------------------------------------------------


def test_headings_stay_below_the_headline():
    html = render_html("# Top\n\n## Section\n\n### Sub\n\n###### Deep")
    assert "<h1" not in html
    assert "<h2>Top</h2>" in html
    assert "<h2>Section</h2>" in html
    assert "<h3>Sub</h3>" in html
    assert "<h4>Deep</h4>" in html


def test_paragraphs_and_emphasis():
    html = render_html("First *soft* and **hard**.\n\nSecond.")
    assert html == "<p>First <em>soft</em> and <strong>hard</strong>.</p>\n<p>Second.</p>"


def test_blockquote():
    assert render_html("> Said it.") == "<blockquote>\n<p>Said it.</p>\n</blockquote>"


def test_lists():
    html = render_html("- a\n- b\n\n3. three\n4. four")
    assert "<ul>\n<li>a</li>\n<li>b</li>\n</ul>" in html
    assert '<ol start="3">' in html


def test_links_get_rel_and_keep_title():
    html = render_html('[Reuters](https://reuters.com/x "Wire")')
    assert html == (
        '<p><a href="https://reuters.com/x" title="Wire" rel="noopener noreferrer">'
        "Reuters</a></p>"
    )


def test_relative_links_and_images_become_absolute(settings):
    settings.SITE_URL = "https://news.example"
    html = render_html("[more](/stories/x/) ![map](/static/map.png)")
    assert 'href="https://news.example/stories/x/"' in html
    assert 'src="https://news.example/static/map.png"' in html


def test_images_keep_alt_and_title():
    html = render_html('![A map](https://cdn.example/map.png "Map")')
    assert '<img alt="A map" src="https://cdn.example/map.png" title="Map">' in html


def test_typographic_quotes_but_code_untouched():
    html = render_html('He said "yes" -- `x = "y"`')
    assert "\u201cyes\u201d" in html
    assert '<code>x = "y"</code>' in html


def test_tables_align_with_attributes_not_styles():
    html = render_html("| a | b |\n|:--|--:|\n| 1 | 2 |")
    assert '<th align="left">a</th>' in html
    assert '<td align="right">2</td>' in html
    assert "style" not in html


def test_fenced_code_is_escaped_and_classless():
    html = render_html('```python\nprint("<b>")\n```')
    assert html == '<pre><code>print("&lt;b&gt;")\n</code></pre>'


def test_rendering_is_cached_and_follows_site_url(settings):
    assert render_html("same") is render_html("same")
    settings.SITE_URL = "https://a.example"
    first = render_html("[x](/y)")
    settings.SITE_URL = "https://b.example"
    assert render_html("[x](/y)") != first


# --- Hostile input ----------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x]( javascript:alert(1))",
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href="&#x6A;&#x61;vascript&#58;alert(1)">x</a>',
    '<a href="java&#9;script:alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    "![x](data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=)",
    '<img src="javascript:alert(1)">',
    '<iframe src="https://evil.example"></iframe>',
    '<object data="x.swf"></object><embed src="x.swf">',
    '<form action="https://evil.example"><input name="p"></form>',
    '<p style="position:fixed;top:0">x</p>',
    "<style>body{display:none}</style>",
    "<svg><script>alert(1)</script></svg>",
    '<svg onload="alert(1)"><a xlink:href="javascript:alert(1)">x</a></svg>',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
    '<a href="https://ok.example" onclick="alert(1)" target="_blank">x</a>',
    "<javascript:alert(1)>",
    '<div onmouseover="alert(1)">hover</div>',
    "<!-- <script>alert(1)</script> -->",
    '<base href="https://evil.example/">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
]


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag


def _parsed(html):
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.tags


def _assert_safe(html):
    lowered = html.lower()
    assert "<script" not in lowered
    assert "<style" not in lowered
    for tag, attrs in _parsed(html):
        assert tag in ALLOWED_TAGS, tag
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name != "style", tag
            if name in {"href", "src"}:
                scheme = urlsplit(value).scheme.lower()
                allowed = {"http", "https", "mailto"} if name == "href" else {"http", "https"}
                assert scheme in allowed, (tag, value)
        if tag == "a":
            assert attrs.get("rel") == "noopener noreferrer"


@pytest.mark.parametrize("markdown_text", HOSTILE)
def test_hostile_markdown_is_neutralised(markdown_text):
    _assert_safe(render_html(markdown_text))


def test_dropped_elements_take_their_content_along():
    html = render_html("<script>alert(1)</script><style>b{}</style><iframe>inner</iframe>Ok")
    assert "alert" not in html
    assert "b{}" not in html
    assert "inner" not in html
    assert "Ok" in html


def test_event_handlers_and_styles_are_stripped_but_text_kept():
    html = render_html('<p style="color:red" onclick="x()">Hello</p>')
    assert html == "<p>Hello</p>"


def test_javascript_link_loses_its_href_but_keeps_its_text():
    html = render_html("[click](javascript:alert(1))")
    # No <a> left without a target: it would look like a link that goes nowhere.
    assert html == "<p>click</p>"


def test_autolinks_are_links_and_email_autolinks_are_mailto():
    html = render_html("<https://example.com/a?b=1&c=2> <news@example.com>")
    assert '<a href="https://example.com/a?b=1&amp;c=2" rel="noopener noreferrer">' in html
    assert (
        '<a href="mailto:news@example.com" rel="noopener noreferrer">news@example.com</a>' in html
    )


def test_mailto_is_not_an_image_source():
    assert "src" not in render_html("![x](mailto:a@example.com)")


_fragments = st.sampled_from([
    *HOSTILE, "<", ">", "&", '"', "'", "javascript:", "on", "=", "onerror=", " ", "\n",
    "\n\n", "[", "]", "(", ")", "![", "<a href=", "<img src=", "`", "*", "#", ">", "- ",
    "&#", "x", ";", ":", "data:", "\t", "<svg", "<script", "</", "/>",
])


@hypothesis_settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(st.text(), st.lists(_fragments, max_size=30).map("".join)))
def test_no_input_produces_active_content(markdown_text):
    _assert_safe(render_html(markdown_text))


_markdown_syntax = st.sampled_from([
    "word", "longer words here", "#", "## ", "*", "**", "_", "- ", "1. ", "> ", "[", "]", "(",
    ")", "https://x.example/p", "![alt](https://x.example/i.png)", "`", "```", "|", "---",
    " ", "  ", "\n", "\n\n", "    ", '"', "'", "--",
])


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(_markdown_syntax, max_size=40).map("".join))
def test_text_rendering_leaves_no_markup_and_fits_the_width(markdown_text):
    text = render_text(markdown_text)
    # The input has no "<" or "&", so any in the output would be leaked markup.
    assert "<" not in text
    assert "&" not in text
    for line in text.splitlines():
        # Code blocks are kept verbatim, also inside a quote ("> " + 4-space indent).
        if not line.startswith(("    ", ">     ")):
            assert len(line) <= 72 or " " not in line.strip(" >-0123456789.")


# --- Plain text -------------------------------------------------------------------


def test_text_headings_are_underlined():
    assert render_text("# Big news\n\n### Detail") == "Big news\n========\n\nDetail\n------"


def test_text_paragraphs_wrap_at_72_columns_with_blank_lines_between():
    words = " ".join(["word"] * 40)
    text = render_text(f"{words}\n\nSecond paragraph.")
    first, second = text.split("\n\n")
    assert all(len(line) <= 72 for line in first.splitlines())
    assert len(first.splitlines()) > 1
    assert second == "Second paragraph."


def test_text_links_show_their_url_once():
    text = render_text(
        "See [the report](https://example.com/r), <https://example.com/a> and <me@example.com>."
    )
    assert text == (
        "See the report (https://example.com/r), https://example.com/a and\nme@example.com."
    )


def test_text_long_urls_are_not_broken():
    url = "https://example.com/" + "a" * 100
    assert url in render_text(f"Read [this]({url}) now")


def test_text_blockquotes_are_prefixed():
    text = render_text("> First.\n>\n> Second.\n>\n> > Nested.")
    assert text == "> First.\n>\n> Second.\n>\n> > Nested."


def test_text_lists():
    text = render_text("- one\n- two\n    - nested\n\n1. first\n2. second")
    assert text == "- one\n- two\n  - nested\n\n1. first\n2. second"


def test_text_long_list_items_hang_under_their_marker():
    text = render_text("1. " + " ".join(["word"] * 30))
    lines = text.splitlines()
    assert lines[0].startswith("1. word")
    assert all(line.startswith("   word") for line in lines[1:])


def test_text_decodes_entities_and_smart_quotes():
    assert render_text('Fish &amp; chips, "quoted", 5 &lt; 6') == (
        "Fish & chips, \u201cquoted\u201d, 5 < 6"
    )


def test_text_keeps_code_blocks_verbatim_and_indented():
    assert render_text("```\nif a:\n    b()\n```") == "    if a:\n        b()"


def test_text_images_tables_and_rules():
    text = render_text(
        "![Map of the area](https://x.example/m.png)\n\n***\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    )
    assert text == "[Map of the area]\n\n* * *\n\na | b\n1 | 2"


def test_text_line_breaks_are_kept():
    assert render_text("Line one  \nline two") == "Line one\nline two"


def test_text_has_no_markup_for_hostile_input():
    text = render_text("<script>alert(1)</script><b>bold</b> <i onclick=x>it</i>")
    assert text == "bold it"


def test_text_non_breaking_spaces_survive():
    assert render_text("10&nbsp;km") == "10\u00a0km"


def test_html_to_text_handles_stray_markup():
    assert html_to_text("<li>orphan</li><td>cell</td>plain") == "orphan\n\ncell\n\nplain"


@pytest.fixture
def image_hosts(settings):
    settings.NEWSROOM_MAIL_IMAGE_HOSTS = ["img.example.com"]


def test_mail_keeps_images_from_allowed_https_hosts_with_alt_text(image_hosts):
    html = render_html('![](https://img.example.com/a.png "Dam at dawn") '
                       '![Map of the valley](https://img.example.com/map.png) '
                       '![](https://img.example.com/b.png)')
    mail = mail_html(html)
    assert '<img src="https://img.example.com/a.png" alt="Dam at dawn">' in mail
    assert '<img src="https://img.example.com/map.png" alt="Map of the valley">' in mail
    assert '<img src="https://img.example.com/b.png" alt="Image">' in mail


def test_mail_leaves_out_images_from_other_hosts_and_plain_http(image_hosts):
    body = ("Text.\n\n![pixel](https://track.example.net/p.gif)\n\n"
            "![old](http://img.example.com/old.png) ![x](https://IMG.example.com.evil.net/x.png)")
    html = render_html(body)
    assert html.count("<img") == 3  # the site keeps them all
    assert mail_html(html) == "<p>Text.</p>"
