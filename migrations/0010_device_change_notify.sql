-- Every replica caches the device representation that `GET /api/v1/devices/{device}` answers
-- with (see Sources/FlotillaAPI/DeviceCache.swift). It stays honest because any change to what
-- that representation is built from (the device row, its installed versions, its group
-- memberships, the names of its groups) sends `NOTIFY flotilla_changes, 'devices:<id>,<id>…'`
-- when it commits, whichever code (or psql session) made it. Triggers rather than calls at each
-- write site, so a write path added later cannot forget to tell the caches.
--
-- Statement-level triggers with transition tables: a statement that touches a thousand
-- devices sends a handful of notifications, not a thousand, and one touching none sends
-- nothing. A payload holds at most 8000 bytes, so ids go 200 to a notification; past 1000
-- ids the statement simply says 'devices:*' (flush everything).

CREATE FUNCTION flotilla_notify_devices(ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    n int := coalesce(array_length(ids, 1), 0);
BEGIN
    IF n = 0 THEN
        RETURN;
    ELSIF n > 1000 THEN
        PERFORM pg_notify('flotilla_changes', 'devices:*');
        RETURN;
    END IF;
    FOR chunk IN 0 .. (n - 1) / 200 LOOP
        PERFORM pg_notify('flotilla_changes', 'devices:' || array_to_string(ids[chunk * 200 + 1 : chunk * 200 + 200], ','));
    END LOOP;
END $$;

-- The transition table is called `changed` in every trigger below; its rows carry the device
-- id as `id` (devices) or `device_id` (installed_versions, group_members).
CREATE FUNCTION flotilla_devices_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flotilla_notify_devices((SELECT array_agg(DISTINCT id) FROM changed));
    RETURN NULL;
END $$;

CREATE FUNCTION flotilla_device_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flotilla_notify_devices((SELECT array_agg(DISTINCT device_id) FROM changed));
    RETURN NULL;
END $$;

-- A renamed group changes the `groups` list of each of its members.
CREATE FUNCTION flotilla_group_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM flotilla_notify_devices((SELECT array_agg(DISTINCT m.device_id) FROM changed c
                                     JOIN group_members m ON m.group_id = c.id));
    RETURN NULL;
END $$;

-- A new device needs no trigger: nobody can have cached it. Deleting a group deletes its
-- memberships (ON DELETE CASCADE), which fires the group_members trigger.
CREATE TRIGGER devices_updated AFTER UPDATE ON devices REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_devices_changed();
CREATE TRIGGER devices_deleted AFTER DELETE ON devices REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_devices_changed();
CREATE TRIGGER installed_inserted AFTER INSERT ON installed_versions REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_device_rows_changed();
CREATE TRIGGER installed_updated AFTER UPDATE ON installed_versions REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_device_rows_changed();
CREATE TRIGGER installed_deleted AFTER DELETE ON installed_versions REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_device_rows_changed();
CREATE TRIGGER members_inserted AFTER INSERT ON group_members REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_device_rows_changed();
CREATE TRIGGER members_deleted AFTER DELETE ON group_members REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_device_rows_changed();
CREATE TRIGGER groups_renamed AFTER UPDATE ON groups REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION flotilla_group_renamed();
