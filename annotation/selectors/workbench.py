"""What the annotator's workbench says when it has no group to show."""

from __future__ import annotations

from annotation.models import CandidateGroup, Round


def groups_generating_count() -> int:
    """Groups whose videos are still being generated in rounds that are live (generating or annotating): when there
    are some, "nothing to judge" means "not yet", and the page says so."""
    return CandidateGroup.objects.filter(
        status=CandidateGroup.Status.GENERATING,
        round__status__in=(Round.Status.GENERATING, Round.Status.ANNOTATING),
    ).count()
