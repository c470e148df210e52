"""``health`` answers from the instance alone."""

from __future__ import annotations


def test_get_and_head_answer_healthy(client_for) -> None:
    client = client_for("health", url="postgresql://nobody@127.0.0.1:1/none")
    response = client.get("/")
    assert response.status_code == 200
    assert response.get_json() == {"status": "healthy"}
    assert client.head("/").status_code == 200


def test_other_methods_are_refused(client_for) -> None:
    client = client_for("health")
    for method in ("post", "put", "delete", "patch"):
        response = getattr(client, method)("/")
        assert response.status_code == 405
        assert response.headers["Allow"] == "GET, HEAD"
        assert "not allowed" in response.get_json()["message"]
