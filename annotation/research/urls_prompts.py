from django.urls import path

from annotation.research import views_prompts as v

urlpatterns = [
    path("prompts/", v.prompt_list, name="research-prompt-list"),
    path("prompts/bulk/", v.prompt_bulk, name="research-prompt-bulk"),
]
