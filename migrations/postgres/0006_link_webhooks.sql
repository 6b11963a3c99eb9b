-- A link's webhook (`links.webhook`, the name of a shared target) is every node's: the nodes
-- read it with the rest of the configuration (`Pg::shared_config`), and a link made with one
-- tells the listening nodes to read it again, so its uploads through any node are announced.
CREATE INDEX links_with_webhook ON links (expires_at) WHERE webhook IS NOT NULL;
CREATE TRIGGER links_webhook_added AFTER INSERT ON links
    FOR EACH ROW WHEN (NEW.webhook IS NOT NULL) EXECUTE FUNCTION postgate_config_changed();
