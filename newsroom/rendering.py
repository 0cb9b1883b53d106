def render_html(markdown_text: str) -> str:
    raise NotImplementedError


def render_text(markdown_text: str) -> str:
    raise NotImplementedError
