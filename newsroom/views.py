from django.http import HttpRequest, HttpResponse


def story_index(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError


def story_detail(request: HttpRequest, slug: str) -> HttpResponse:
    raise NotImplementedError


def category_detail(request: HttpRequest, slug: str) -> HttpResponse:
    raise NotImplementedError
