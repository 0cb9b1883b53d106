"""The subscriber admin's "Import a list": upload, preview, confirm, watch it run.

The upload is saved and a dry run of it (the preview: first rows, what each
would become, counts, bad lines with reasons, tags without a topic) runs as a
Celery task; nothing is saved until a person confirms, and then the same file
is imported by another task. Both report progress after every chunk to the
cache; the page polls it with a small script (import_progress.js), or, without
JavaScript, refreshes itself. Needs the `import_subscriber` permission.
Hooked into SubscriberAdmin.get_urls by `import_urls`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from subscriptions.importing import jobs
from subscriptions.importing.formats import FORMATS
from subscriptions.importing.service import ImportRefused, parse_mapping, topic_lookup
from subscriptions.importing.tasks import subscribers_import_run

POLL_SECONDS = 2
NOSCRIPT_REFRESH_SECONDS = 5
FORMAT_LABELS = {"mailchimp": "Mailchimp (audience export: the zip, or one of its CSVs)",
                 "listmonk": "listmonk (subscribers export)", "ghost": "Ghost (members export)",
                 "substack": "Substack (email_list CSV)",
                 "csv": "Plain CSV (email, name, topics, status, consented_at)"}


class ImportForm(forms.Form):
    file = forms.FileField(help_text="CSV, or a zip of CSVs (Mailchimp).")
    format = forms.ChoiceField(choices=[(f, FORMAT_LABELS[f]) for f in FORMATS])
    mapping = forms.CharField(
        label="Tags to topics", required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One per line: their tag, list, label or segment = our topic slug, "
                  "e.g. <code>Tag A=policy</code>. Tags equal to a topic slug need none.")
    source_list = forms.CharField(
        label="Tag for every row", required=False,
        help_text="For a per-list export (listmonk): the list's name or a topic slug.")
    require_confirmation = forms.BooleanField(
        required=False, label="Ask them to confirm (double opt-in)",
        help_text="Off: subscribed readers become active at once with the consent they gave "
                  "at the source. On: they stay pending until they click a confirmation mail.")

    def clean_mapping(self) -> dict[str, str]:
        lines = [line for line in self.cleaned_data["mapping"].splitlines() if line.strip()]
        try:
            mapping = parse_mapping(lines)
            topic_lookup(mapping)
        except ImportRefused as exc:
            raise forms.ValidationError(str(exc)) from None
        return mapping


def _check(request: HttpRequest) -> None:
    if not request.user.has_perm("subscriptions.import_subscriber"):
        raise PermissionDenied


def _job(request: HttpRequest, job_id: str) -> jobs.ImportJob:
    _check(request)
    job = jobs.job_get(job_id)
    if job is None or job.user_id != request.user.pk:
        raise Http404("No such import (imports are forgotten after a day).")
    return job


def _context(model_admin: admin.ModelAdmin, request: HttpRequest, title: str,
             **extra: Any) -> dict[str, Any]:
    request.current_app = model_admin.admin_site.name
    return {**model_admin.admin_site.each_context(request), "title": title, "subtitle": None,
            "opts": model_admin.opts, **extra}


def upload_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    _check(request)
    form = ImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        suffix = ".zip" if upload.name.lower().endswith(".zip") else ".csv"
        job = jobs.job_create(
            path="", filename=Path(upload.name).name[:200], format=form.cleaned_data["format"],
            mapping=form.cleaned_data["mapping"], source_list=form.cleaned_data["source_list"],
            require_confirmation=form.cleaned_data["require_confirmation"],
            user_id=request.user.pk)
        target = jobs.upload_folder() / f"{job.id}{suffix}"
        with target.open("wb") as out:
            for piece in upload.chunks():
                out.write(piece)
        job.path = str(target)
        jobs.job_save(job)
        subscribers_import_run.delay(job.id)
        return HttpResponseRedirect(_job_url(job))
    return TemplateResponse(request, "admin/subscriptions/subscriber/import_form.html",
                            _context(model_admin, request, "Import a list", form=form))


def _job_url(job: jobs.ImportJob, name: str = "import_job") -> str:
    return reverse(f"admin:subscriptions_subscriber_{name}", args=[job.id])


def _job_context(job: jobs.ImportJob) -> dict[str, Any]:
    return {"job": job, "report": job.get_report(), "preview_report": job.get_preview_report(),
            "status_url": _job_url(job, "import_status"),
            "confirm_url": _job_url(job, "import_confirm"),
            "poll_seconds": POLL_SECONDS, "noscript_refresh_seconds": NOSCRIPT_REFRESH_SECONDS}


def job_view(model_admin: admin.ModelAdmin, request: HttpRequest, job_id: str) -> HttpResponse:
    job = _job(request, job_id)
    title = "Import a list: preview" if job.phase == jobs.PREVIEW else "Import a list"
    return TemplateResponse(request, "admin/subscriptions/subscriber/import_job.html",
                            _context(model_admin, request, title, **_job_context(job)))


def status_view(model_admin: admin.ModelAdmin, request: HttpRequest, job_id: str) -> JsonResponse:
    """How far the job has got, for the page's script; it reloads when the state changes."""
    job = _job(request, job_id)
    response = JsonResponse({
        "phase": job.phase, "state": job.state, "percent": job.percent, "rows": job.rows,
        "html": render_to_string("admin/subscriptions/subscriber/_import_progress.html",
                                 _job_context(job), request=request),
    })
    response["Cache-Control"] = "no-store"
    return response


def confirm_view(model_admin: admin.ModelAdmin, request: HttpRequest, job_id: str) -> HttpResponse:
    """Start the import of a previewed file: on a POST, once."""
    job = _job(request, job_id)
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if jobs.job_claim_import(job):
        subscribers_import_run.delay(job.id)
        model_admin.message_user(request, f"Importing {job.filename}.")
    return HttpResponseRedirect(_job_url(job))


def import_urls(model_admin: admin.ModelAdmin) -> list[URLPattern]:
    """The import pages, under the subscriber admin's URLs."""
    view = model_admin.admin_site.admin_view
    name = "subscriptions_subscriber_import"
    return [
        path("import/", view(partial(upload_view, model_admin)), name=name),
        path("import/<str:job_id>/", view(partial(job_view, model_admin)), name=f"{name}_job"),
        path("import/<str:job_id>/status/", view(partial(status_view, model_admin)),
             name=f"{name}_status"),
        path("import/<str:job_id>/confirm/", view(partial(confirm_view, model_admin)),
             name=f"{name}_confirm"),
    ]
