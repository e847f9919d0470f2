"""Default reference data, created by data migration 0002 (editable afterwards in the admin)."""

# The 11 categories of Step-Video-T2V-Eval.
CATEGORIES = [
    ("sports", "Sports"),
    ("food", "Food"),
    ("scenery", "Scenery"),
    ("animals", "Animals"),
    ("festivals", "Festivals"),
    ("combination-concepts", "Combination concepts"),
    ("surreal", "Surreal"),
    ("people", "People"),
    ("3d-animation", "3D animation"),
    ("cinematography", "Cinematography"),
    ("artistic-style", "Artistic style"),
]

FLAW_TAGS = [
    ("distorted-face", "Distorted face"),
    ("distorted-hands", "Distorted hands"),
    ("flicker", "Flicker"),
    ("morphing", "Morphing"),
    ("physics", "Implausible physics"),
    ("prompt-mismatch", "Prompt mismatch"),
    ("text-rendering", "Text rendering"),
    ("static", "Static / no motion"),
    ("artifacts", "Artifacts"),
]

# The demo's shapes world: what can go wrong in its clips (added by ``seed_demo``; the tags no shapes clip can show,
# faces, hands and rendered text, are hidden when the demo first sets up a database)
WORLD_FLAW_TAGS = [
    ("wrong-colour", "Wrong colour", "The objects (or the background) are not the colour the prompt asks for."),
    ("wrong-count", "Wrong count", "More or fewer objects than the prompt asks for."),
    ("wrong-shape", "Wrong shape", "Not the shape the prompt asks for, or a shape that cannot be told."),
    ("wrong-motion", "Wrong motion", "The objects move another way (or stay still) than the prompt asks for."),
    ("broken-object", "Broken object", "An object smears, splits, melts into the background or vanishes."),
]
WORLD_HIDDEN_FLAW_TAGS = ("distorted-face", "distorted-hands", "text-rendering")

# Role -> the model permissions (app label "annotation") its group gets.
ROLE_PERMISSIONS = {
    "annotator": [],
    "reviewer": ["view_judgment", "view_candidatelabel", "view_reviewitem", "change_reviewitem", "view_candidategroup"],
    "researcher": "__all_annotation__",
    # all annotation rights, and only to see users: no role can edit users, groups or permissions (that would let it
    # make superusers); accounts are managed by superusers or `manage.py`
    "admin": "__all_annotation__",
}
ADMIN_EXTRA_PERMISSIONS = ["view_user", "view_group"]  # codenames in django.contrib.auth
